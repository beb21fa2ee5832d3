"""Open-loop metrics: hand-computed cases, shapely cross-checks, crafted cases on real data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from _bags import converted_bag, frames

from fastdrivevla_ros.data.bag_reader import DrivableGrid, PlanningTarget
from fastdrivevla_ros.eval.metrics import EGO_CENTRE_OFFSET, EGO_LENGTH, EGO_WIDTH, box_corners, \
    cells_inside, collisions_grid, collisions_polygon, evaluate
from fastdrivevla_ros.eval.report import relative

def close(expected: dict):
    """Reported values are rounded to 1e-4 (cm or %)."""
    return pytest.approx(expected, abs=1e-3)


STRAIGHT = np.array([[2.0 * (i + 1), 0.0] for i in range(6)])   # 4 m/s straight ahead


def _target(future=STRAIGHT, boxes=(), drivable=None, token="t") -> PlanningTarget:
    """boxes: (step, x, y, yaw, length, width, category)."""
    b = list(boxes)
    return PlanningTarget(
        token=token, future=np.asarray(future, float), valid=np.ones(6, bool),
        boxes=np.array([x[1:6] for x in b], float).reshape(-1, 5),
        steps=np.array([x[0] for x in b], int),
        categories=np.array([x[6] for x in b], dtype=object),
        points=np.full(len(b), 5), instances=np.array([f"i{k}" for k in range(len(b))], object),
        drivable=drivable, drivable_source="test" if drivable is not None else "none")


# ------------------------------------------------------------------------------ L2
def test_l2_mean_up_to_t_and_at_t_on_hand_computed_errors():
    offsets = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])     # lateral error per step, metres
    pred = STRAIGHT + np.stack([np.zeros(6), offsets], 1)
    m = evaluate({"t": pred}, [_target()], "stp3")
    # ST-P3/VAD: mean over steps up to t -> (0.1+0.2)/2, (0.1..0.4)/4, (0.1..0.6)/6
    assert m["l2_cm"] == close({"1s": 15.0, "2s": 25.0, "3s": 35.0, "avg": 25.0})
    u = evaluate({"t": pred}, [_target()], "uniad")
    assert u["l2_cm"] == close({"1s": 20.0, "2s": 40.0, "3s": 60.0, "avg": 40.0})
    assert m["l2_cm_per_step"] == pytest.approx([10, 20, 30, 40, 50, 60])


def test_only_samples_with_a_full_future_and_a_prediction_count():
    partial = _target(token="partial")
    partial.valid[4:] = False
    m = evaluate({"t": STRAIGHT + [0, 1], "partial": STRAIGHT},
                 [_target(), partial, _target(token="x")])
    assert m["samples"] == 1 and m["missing_predictions"] == 1
    assert m["l2_cm"]["avg"] == pytest.approx(100.0)


# ------------------------------------------------------------------------------ geometry
def test_box_corners_match_a_shapely_rotated_rectangle():
    corners = box_corners(3.0, -2.0, 0.7, 4.0, 2.0)
    ref = shapely.affinity.rotate(shapely.box(1.0, -3.0, 5.0, -1.0), 0.7, origin=(3.0, -2.0),
                                  use_radians=True)
    assert shapely.polygons(corners).equals_exact(ref, 1e-9) or \
        shapely.polygons(corners).symmetric_difference(ref).area < 1e-9


def test_cells_inside_are_the_cells_whose_centres_shapely_contains():
    rng = np.random.default_rng(1)
    res, shape, origin = 0.5, (40, 60), (-15.0, -10.0)
    cols, rows = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]))
    cx, cy = origin[0] + (cols + 0.5) * res, origin[1] + (rows + 0.5) * res
    for _ in range(20):
        poly = box_corners(*rng.uniform([-12, -8, -3, 1, 1], [12, 8, 3, 9, 5]))
        r, c = cells_inside(poly, origin, res, shape)
        ours = np.zeros(shape, bool)
        ours[r, c] = True
        np.testing.assert_array_equal(ours, shapely.contains_xy(shapely.polygons(poly), cx, cy))


def test_grid_collision_agrees_with_shapely_on_clear_cases():
    """0.5 m grid vs exact overlap: boxes overlapping by > 1 m^2 collide on the grid too,
    boxes more than 1 m apart do not."""
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(300):
        a = box_corners(*rng.uniform([-5, -5, -3, 1, 0.5], [5, 5, 3, 6, 3]))
        b = box_corners(*rng.uniform([-5, -5, -3, 1, 0.5], [5, 5, 3, 6, 3]))
        pa, pb = shapely.polygons(a), shapely.polygons(b)
        grid = collisions_grid(a[None], [b[None]])[0]
        exact = collisions_polygon(a[None], [b[None]])[0]
        assert exact == shapely.intersects(pa, pb)
        if shapely.intersection(pa, pb).area > 1.0:
            assert grid
            checked += 1
        elif shapely.distance(pa, pb) > 1.0:
            assert not grid
            checked += 1
    assert checked > 200


# ------------------------------------------------------------------------------ collision
def _ego_box_centre_on(agent_xy, previous):
    """Waypoint that puts the ego box centre on `agent_xy` (heading from `previous`)."""
    p = np.asarray(agent_xy, float)
    for _ in range(20):                      # fixed point: heading depends on the waypoint
        d = p - previous
        h = math.atan2(d[1], d[0]) if np.hypot(*d) >= 1.0 else 0.0
        p = np.asarray(agent_xy) - EGO_CENTRE_OFFSET * np.array([math.cos(h), math.sin(h)])
    return p


def test_collision_rates_per_convention_on_a_crafted_box():
    # a car parked 8 m ahead at step 4 only; the prediction stops inside it at step 4
    car = (4, 8.0 + EGO_CENTRE_OFFSET, 4.0, 0.0, 4.5, 1.9, "vehicle.car")
    gt = np.array([[2.0 * (i + 1), -4.0 * (i > 2)] for i in range(6)])  # swerves right, clear
    pred = STRAIGHT.copy()
    m = evaluate({"t": pred}, [_target(gt, [car])], "omnidrive")
    assert m["collision_pct"] == close({"1s": 0, "2s": 0, "3s": 0, "avg": 0})
    pred[3] = [8.0, 4.0]                      # step 4 right where the car is
    pred[2] = [6.0, 4.0]                      # straight approach: heading 0
    m = evaluate({"t": pred}, [_target(gt, [car])], "omnidrive")
    assert m["collision_pct"] == close({"1s": 0, "2s": 100, "3s": 100, "avg": 200 / 3})
    s = evaluate({"t": pred}, [_target(gt, [car])], "stp3")    # mean over steps
    assert s["collision_pct"] == close({"1s": 0, "2s": 25, "3s": 100 / 6,
                                                "avg": (25 + 100 / 6) / 3})
    u = evaluate({"t": pred}, [_target(gt, [car])], "uniad")   # at exactly t
    assert u["collision_pct"] == close({"1s": 0, "2s": 100, "3s": 0, "avg": 100 / 3})


def test_steps_where_the_ground_truth_collides_are_not_counted():
    car = (2, 4.0 + EGO_CENTRE_OFFSET, 0.0, 0.0, 4.5, 1.9, "vehicle.car")   # on the GT path
    m = evaluate({"t": STRAIGHT.copy()}, [_target(STRAIGHT, [car])], "omnidrive")
    assert m["collision_pct"]["avg"] == 0.0


def test_agent_classes_are_chosen_by_category_name():
    walker = (2, 4.0 + EGO_CENTRE_OFFSET, 3.0, 0.0, 0.8, 0.8, "human.pedestrian.adult")
    gt = STRAIGHT + [0.0, -3.0]
    pred = STRAIGHT.copy()
    pred[1] = [4.0, 3.0]
    pred[0] = [2.0, 3.0]
    omni = evaluate({"t": pred}, [_target(gt, [walker])], "omnidrive")
    stp3 = evaluate({"t": pred}, [_target(gt, [walker])], "stp3")
    assert omni["collision_pct"]["1s"] == 0.0      # OmniDrive: vehicles only
    assert stp3["collision_pct"]["1s"] == 50.0     # ST-P3/VAD: vehicles and pedestrians


# ------------------------------------------------------------------------------ intersection
def _road(width_m: float, blocked_at_t0: bool = False) -> DrivableGrid:
    """A straight road |y| < width/2 on a 100 m x 100 m patch at 0.1 m."""
    n, res = 1000, 0.1
    y = -50 + (np.arange(n) + 0.5) * res
    data = np.where(np.abs(y)[:, None] < width_m / 2, 0, 100).repeat(n, 1).astype(np.int8)
    if blocked_at_t0:
        data[495:505, 500:530] = 100
    return DrivableGrid(data, res, (-50.0, -50.0))


def test_leaving_the_drivable_area_counts_from_the_step_it_happens():
    pred = STRAIGHT.copy()
    pred[4:, 1] = [4.0, 8.0]                  # drifts off an 8 m wide road after 2 s
    m = evaluate({"t": pred}, [_target(drivable=_road(8.0))])
    assert m["intersection_pct"] == close({"1s": 0, "2s": 0, "3s": 100, "avg": 100 / 3})
    stays = evaluate({"t": STRAIGHT}, [_target(drivable=_road(8.0))])
    assert stays["intersection_pct"]["avg"] == 0.0


def test_samples_already_off_road_at_t0_never_count_but_stay_in_the_denominator():
    pred = STRAIGHT.copy()
    pred[4:, 1] = [4.0, 8.0]
    m = evaluate({"a": pred, "b": pred},
                 [_target(drivable=_road(8.0, blocked_at_t0=True), token="a"),
                  _target(drivable=_road(8.0), token="b")])
    assert m["offroad_at_t0"] == 1 and m["intersection_samples"] == 2
    assert m["intersection_pct"]["3s"] == pytest.approx(50.0)


def test_waypoints_beyond_the_map_patch_are_counted_not_scored_as_on_road():
    from fastdrivevla_ros.eval.report import table_rows

    far = np.array([[120.0 * (i + 1), 0.0] for i in range(6)])   # a random model's 700 m jump
    m = evaluate({"far": far, "ok": STRAIGHT},                   # patch: [-50, 50) m
                 [_target(drivable=_road(8.0), token="far"),
                  _target(drivable=_road(8.0), token="ok")])
    assert m["intersection_pct"]["avg"] == 0.0          # the metric itself cannot see them,
    assert m["waypoints_outside_map"] == 6 and m["samples_outside_map"] == 1   # so: counted
    row = table_rows([m | {"pruner": "none"}], None)[2]
    assert row.endswith("| 6 (in 1 samples) |")
    assert "Waypoints off the map patch" in table_rows([m], None)[0]


# ------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def targets(scene_dir):
    return [f.target for f in frames(converted_bag(scene_dir))]


def test_ground_truth_as_prediction_scores_zero_on_the_real_scene(targets):
    m = evaluate({t.token: t.future for t in targets}, targets)
    assert m["samples"] == 35
    for c in ("omnidrive", "stp3", "uniad"):
        for key in ("l2_cm", "collision_pct", "intersection_pct"):
            assert m["conventions"][c][key] == {"1s": 0.0, "2s": 0.0, "3s": 0.0, "avg": 0.0}


def test_known_lateral_offset_gives_its_l2_in_both_conventions(targets):
    m = evaluate({t.token: t.future + [0.0, 0.37] for t in targets}, targets)
    for c in ("stp3", "uniad"):
        assert m["conventions"][c]["l2_cm"] == pytest.approx(
            {"1s": 37.0, "2s": 37.0, "3s": 37.0, "avg": 37.0})


def test_a_trajectory_driven_through_a_real_gt_box_collides(targets):
    target = targets[10]
    veh = [j for j in range(len(target.steps)) if target.steps[j] == 3 and
           str(target.categories[j]).startswith("vehicle.") and target.points[j] > 0]
    j = veh[0]
    pred = target.future.copy()
    pred[2] = _ego_box_centre_on(target.boxes[j, :2], pred[1])
    # independent check of the crafted geometry with shapely
    d = pred[2] - pred[1]
    h = math.atan2(d[1], d[0])
    ego = shapely.affinity.rotate(shapely.box(
        -EGO_LENGTH / 2, -EGO_WIDTH / 2, EGO_LENGTH / 2, EGO_WIDTH / 2), h, use_radians=True)
    ego = shapely.affinity.translate(ego, *(pred[2] + EGO_CENTRE_OFFSET * np.array(
        [math.cos(h), math.sin(h)])))
    assert ego.intersects(shapely.polygons(box_corners(*target.boxes[j])))
    m = evaluate({target.token: pred}, [target], "omnidrive")
    assert m["collision_pct"] == close({"1s": 0, "2s": 100, "3s": 100, "avg": 200 / 3})


def test_a_trajectory_leaving_the_real_drivable_area_intersects(targets):
    target = targets[20]
    grid = target.drivable
    x = target.future[5, 0] + EGO_CENTRE_OFFSET
    col = int((x - grid.origin[0]) / grid.resolution)
    # walk left until the patch is not drivable under the footprint centre
    for y in np.arange(0.0, 40.0, 0.5):
        row = int((target.future[5, 1] + y - grid.origin[1]) / grid.resolution)
        if grid.data[row, col] != 0:
            break
    pred = target.future.copy()
    pred[5, 1] += y
    m = evaluate({target.token: pred}, [target])
    assert m["intersection_pct"] == close({"1s": 0, "2s": 0, "3s": 100, "avg": 100 / 3})


def test_rel_is_the_baseline_over_the_run_as_in_the_paper_table():
    # FastDriveVLA Table 1, FastV at 25 %: L2 Avg 32.29 vs 31.83 -> 98.6 %,
    # collision (0, .18, .74) vs (0, .13, .60) -> 79.3 % from the unrounded averages
    assert relative(32.2933, 31.8267) == pytest.approx(98.6, abs=0.05)
    assert relative((0 + 0.18 + 0.74) / 3, (0 + 0.13 + 0.60) / 3) == pytest.approx(79.3, abs=0.05)
    # a run scoring 0 gives no ratio, also when the baseline scores 0 too (issue 21)
    assert relative(0.0, 0.0) is None and relative(0.0, 1.0) is None
