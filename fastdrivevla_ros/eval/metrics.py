"""Open-loop planning metrics: L2, collision and road-boundary intersection, in the published
conventions (shared/reference/nuscenes-eval.md §4).

All geometry is in the ego frame of the current keyframe (x forward, y left, metres), 6 steps
at 0.5 s. Horizons: "1s" = steps 1..2, "2s" = 1..4, "3s" = 1..6; "avg" = mean of the three.
Only samples whose 6 future keyframes all exist are evaluated.

Conventions (pick one for the headline numbers; metrics.json carries all three):
- "omnidrive" (default; OmniDrive / BEV-Planner, which FastDriveVLA's Table 1 follows):
  L2 = mean of the per-step errors up to t; collision = the heading-rotated ego box
  overlaps a VEHICLE box (exact polygon test) at ANY step up to t; intersection below.
- "stp3" (ST-P3 / VAD): L2 mean up to t; collision on a 0.5 m BEV grid with an axis-aligned
  ego box, vehicles and pedestrians, averaged over the steps up to t.
- "uniad": L2 and grid collision at exactly t.
In every convention a step where the GROUND-TRUTH trajectory itself collides is not counted.
Ego box: 4.084 m x 1.85 m, centred 0.5 + 0.985793 m ahead of the rear-axle waypoint (ST-P3's
+0.5 m from the LiDAR plus OmniDrive's LiDAR-to-ego lever arm), heading from the step deltas,
0 when a step is shorter than 1 m (OmniDrive). Agent classes are chosen by category NAME.
Intersection (OmniDrive): the ego footprint covers a non-drivable cell at any step up to t;
samples already off the drivable area at t = 0 never count (they stay in the denominator,
as in OmniDrive's eval_planning.py). The ego box follows the intended semantics; OmniDrive's
code has axis-convention quirks that are not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from fastdrivevla_ros.data.ego import step_headings
from fastdrivevla_ros.errors import ConfigError, InputError

EGO_LENGTH, EGO_WIDTH = 4.084, 1.85
EGO_CENTRE_OFFSET = 0.5 + 0.985793
NUM_STEPS = 6
HORIZONS = {"1s": 2, "2s": 4, "3s": 6}
MIN_HEADING_STEP_M = 1.0
BEV_EXTENT_M, BEV_RESOLUTION_M = 50.0, 0.5       # ST-P3: 200 x 200 cells over +-50 m
VEHICLES = ("vehicle.",)
# the frame every trajectory and score is in (stated in metrics.json and report.md)
FRAME = "ego frame of each keyframe (nuScenes ego_pose, rear axle): x forward, y left, metres"
VEHICLES_AND_PEDESTRIANS = ("vehicle.", "human.pedestrian.")


@dataclass(frozen=True)
class Convention:
    name: str
    l2: str                    # "mean" (up to t) | "at" (exactly t)
    geometry: str              # "polygon" (exact, heading-rotated) | "grid" (0.5 m, axis-aligned)
    collision: str             # "max" | "mean" | "at" over the steps up to t
    agent_prefixes: tuple[str, ...]


CONVENTIONS = {
    "omnidrive": Convention("omnidrive", "mean", "polygon", "max", VEHICLES),
    "stp3": Convention("stp3", "mean", "grid", "mean", VEHICLES_AND_PEDESTRIANS),
    "uniad": Convention("uniad", "at", "grid", "at", VEHICLES_AND_PEDESTRIANS),
}
DEFAULT_CONVENTION = "omnidrive"


def convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise ConfigError(f"unknown metric convention {name!r}; use one of {list(CONVENTIONS)}")
    return CONVENTIONS[name]


# ------------------------------------------------------------------------------ geometry
def headings(traj: np.ndarray) -> np.ndarray:
    """Heading [T] of each step of traj [T, 2]; 0 for steps under MIN_HEADING_STEP_M
    (OmniDrive)."""
    return step_headings(traj, MIN_HEADING_STEP_M)


def box_corners(cx, cy, yaw, length, width) -> np.ndarray:
    """Rotated rectangles -> corners [..., 4, 2] (counter-clockwise)."""
    cx, cy, yaw, length, width = np.broadcast_arrays(*(np.asarray(v, float) for v in
                                                       (cx, cy, yaw, length, width)))
    local = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
    dx = local[:, 0] * length[..., None]
    dy = local[:, 1] * width[..., None]
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    return np.stack([cx[..., None] + c * dx - s * dy, cy[..., None] + s * dx + c * dy], -1)


def ego_corners(points: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Ego footprints [T, 4, 2] for rear-axle waypoints [T, 2] and headings [T]."""
    cx = points[:, 0] + EGO_CENTRE_OFFSET * np.cos(yaw)
    cy = points[:, 1] + EGO_CENTRE_OFFSET * np.sin(yaw)
    return box_corners(cx, cy, yaw, EGO_LENGTH, EGO_WIDTH)


def cells_inside(corners: np.ndarray, origin, resolution: float,
                 shape) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the grid cells whose CENTRES lie inside a convex polygon [K, 2].

    The grid: cell (row j, col i) centred at origin + ((i + 0.5), (j + 0.5)) * resolution,
    `shape` = (rows, cols). Cells outside the grid are not returned."""
    x0, y0 = origin
    lo = np.floor((corners.min(0) - (x0, y0)) / resolution - 0.5).astype(int)
    hi = np.ceil((corners.max(0) - (x0, y0)) / resolution - 0.5).astype(int)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, (shape[1] - 1, shape[0] - 1))
    if np.any(hi < lo):
        return np.zeros(0, int), np.zeros(0, int)
    cols, rows = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
    px = x0 + (cols.ravel() + 0.5) * resolution
    py = y0 + (rows.ravel() + 0.5) * resolution
    a, b = corners, np.roll(corners, -1, axis=0)
    cross = ((b[:, 0] - a[:, 0])[:, None] * (py - a[:, 1, None])
             - (b[:, 1] - a[:, 1])[:, None] * (px - a[:, 0, None]))
    inside = np.all(cross >= 0, axis=0) | np.all(cross <= 0, axis=0)
    return rows.ravel()[inside], cols.ravel()[inside]


def _bev_grid() -> tuple[tuple[float, float], float, tuple[int, int]]:
    n = int(round(2 * BEV_EXTENT_M / BEV_RESOLUTION_M))
    return (-BEV_EXTENT_M, -BEV_EXTENT_M), BEV_RESOLUTION_M, (n, n)


def collisions_polygon(ego: np.ndarray, agents: list[np.ndarray]) -> np.ndarray:
    """ego [T, 4, 2], agents: per step [M_t, 4, 2] -> [T] bool (exact overlap, shapely)."""
    import shapely

    out = np.zeros(len(ego), dtype=bool)
    for t, (e, a) in enumerate(zip(ego, agents)):
        if len(a):
            out[t] = bool(shapely.intersects(shapely.polygons(e), shapely.polygons(a)).any())
    return out


def collisions_grid(ego: np.ndarray, agents: list[np.ndarray]) -> np.ndarray:
    """Same on the 0.5 m BEV grid: the footprint and an agent cover a common cell (cells
    taken by their centres). Only agents whose bounding box reaches the footprint's are
    rasterised."""
    origin, res, shape = _bev_grid()
    out = np.zeros(len(ego), dtype=bool)
    for t, (e, a) in enumerate(zip(ego, agents)):
        rows, cols = cells_inside(e, origin, res, shape)
        if not len(a) or not len(rows):
            continue
        ego_cells = rows * shape[1] + cols
        near = (a.min(1) <= e.max(0) + res).all(1) & (a.max(1) >= e.min(0) - res).all(1)
        for poly in a[near]:
            r, c = cells_inside(poly, origin, res, shape)
            if np.intersect1d(ego_cells, r * shape[1] + c).size:
                out[t] = True
                break
    return out


# ------------------------------------------------------------------------------ one sample
def _agents_per_step(target, prefixes: tuple[str, ...], require_points: bool) -> list[np.ndarray]:
    """Agent box corners [M_t, 4, 2] at steps 1..6, filtered by category name prefix and
    (optionally) by having LiDAR/radar points at the current keyframe (mmdet3d valid_flag)."""
    keep = np.array([str(c).startswith(prefixes) for c in target.categories], dtype=bool)
    if require_points:
        keep &= np.asarray(target.points) > 0
    boxes, steps = np.asarray(target.boxes).reshape(-1, 5)[keep], np.asarray(target.steps)[keep]
    corners = box_corners(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4])
    return [corners[steps == t] for t in range(1, NUM_STEPS + 1)]


def _collisions(pred, gt, agents, geometry: str) -> np.ndarray:
    """[6] bool: the prediction collides at a step where the ground truth does not."""
    if geometry == "polygon":
        check = collisions_polygon
        pe, ge = ego_corners(pred, headings(pred)), ego_corners(gt, headings(gt))
    else:   # ST-P3 grid: axis-aligned ego box
        check = collisions_grid
        zero = np.zeros(NUM_STEPS)
        pe, ge = ego_corners(pred, zero), ego_corners(gt, zero)
    return check(pe, agents) & ~check(ge, agents)


def outside_patch(traj: np.ndarray, grid) -> np.ndarray:
    """[T] bool: the waypoint lies beyond the drivable-area patch, where intersection cannot
    be judged (counted, never silently scored as on-road)."""
    x0, y0 = grid.origin
    rows, cols = grid.data.shape
    x, y = traj[:, 0], traj[:, 1]
    return (x < x0) | (x >= x0 + cols * grid.resolution) | \
        (y < y0) | (y >= y0 + rows * grid.resolution)


def offroad(traj: np.ndarray, grid) -> tuple[np.ndarray, bool]:
    """([6] bool per step, bool at t=0): the ego footprint covers a cell that is not drivable
    (100, or -1 = off the map). Cells beyond the patch are ignored."""
    def out(corners) -> bool:
        rows, cols = cells_inside(corners, grid.origin, grid.resolution, grid.data.shape)
        return bool(np.any(grid.data[rows, cols] != 0))

    steps = ego_corners(traj, headings(traj))
    now = ego_corners(np.zeros((1, 2)), np.zeros(1))[0]
    return np.array([out(c) for c in steps]), out(now)


def sample_metrics(pred, target, require_points: bool = True) -> dict:
    """Per-sample, per-step values every convention aggregates (JSON-safe).

    pred: [6, 2] ego-frame waypoints; target: PlanningTarget with a full future."""
    pred = np.asarray(pred, dtype=float)
    if pred.shape != (NUM_STEPS, 2) or not np.all(np.isfinite(pred)):
        raise InputError(f"prediction for {target.token} must be 6 finite (x, y), "
                         f"got shape {pred.shape}")
    gt = np.asarray(target.future, dtype=float)
    out = {"l2": np.hypot(*(pred - gt).T).tolist(), "collision": {}}
    for prefixes in {c.agent_prefixes for c in CONVENTIONS.values()}:
        agents = _agents_per_step(target, prefixes, require_points)
        for geometry in ("polygon", "grid"):
            out["collision"][_collision_key(geometry, prefixes)] = \
                _collisions(pred, gt, agents, geometry).tolist()
    if target.drivable is not None:
        steps, now = offroad(pred, target.drivable)
        out["offroad"], out["offroad_t0"] = steps.tolist(), now
        out["outside_map"] = outside_patch(pred, target.drivable).tolist()
    return out


def _collision_key(geometry: str, prefixes: tuple[str, ...]) -> str:
    return f"{geometry}:{'+'.join(p.rstrip('.') for p in prefixes)}"


# ------------------------------------------------------------------------------ aggregation
def _horizon_values(per_step: np.ndarray, how: str) -> dict[str, float]:
    """per_step [N, 6] -> {"1s", "2s", "3s", "avg"} averaged over samples."""
    out = {}
    for key, k in HORIZONS.items():
        part = per_step[:, :k]
        value = {"mean": part.mean(1), "at": part[:, k - 1], "max": part.max(1)}[how]
        out[key] = float(value.mean()) if len(value) else float("nan")
    out["avg"] = float(np.mean([out[k] for k in HORIZONS]))
    return out


def _percent(values: dict[str, float]) -> dict[str, float]:
    """Metres -> cm and rates -> %, both x100, rounded for reports."""
    return {k: round(100.0 * v, 4) for k, v in values.items()}


def aggregate(samples: list[dict], name: str = DEFAULT_CONVENTION) -> dict:
    """Per-sample values -> {samples, convention, l2_cm, collision_pct, intersection_pct, ...}."""
    conv = convention(name)
    n = len(samples)
    l2 = np.array([s["l2"] for s in samples], float).reshape(n, NUM_STEPS)
    key = _collision_key(conv.geometry, conv.agent_prefixes)
    col = np.array([s["collision"][key] for s in samples], float).reshape(n, NUM_STEPS)
    with_map = [s for s in samples if "offroad" in s]
    off = np.array([np.asarray(s["offroad"], float) * (not s["offroad_t0"]) for s in with_map],
                   float).reshape(len(with_map), NUM_STEPS)
    intersection = _horizon_values(off, "max") if with_map else \
        {k: float("nan") for k in (*HORIZONS, "avg")}
    return {
        "samples": n,
        "convention": conv.name,
        "l2_cm": _percent(_horizon_values(l2, conv.l2)),
        "collision_pct": _percent(_horizon_values(col, conv.collision)),
        "intersection_pct": _percent(intersection),
        "l2_cm_per_step": [round(v, 4) for v in (100.0 * l2.mean(0)).tolist()] if n else [],
        "collision_geometry": conv.geometry,
        "agent_classes": list(conv.agent_prefixes),
        "intersection_samples": len(with_map),
        "offroad_at_t0": int(sum(bool(s["offroad_t0"]) for s in with_map)),
        **_outside_map(samples),
        "frame": FRAME,
    }


def _outside_map(samples: list[dict]) -> dict:
    """Waypoints beyond the drivable-area patch (e.g. a random model's 700 m jumps): the
    intersection metric cannot see them, so they are counted next to it. None: unknown
    (no map patch, or records written before this count existed)."""
    known = [s["outside_map"] for s in samples if "outside_map" in s]
    if not known:
        return {"waypoints_outside_map": None, "samples_outside_map": None}
    return {"waypoints_outside_map": int(sum(map(sum, known))),
            "samples_outside_map": int(sum(any(k) for k in known))}


def evaluate(predictions: Mapping[str, np.ndarray], ground_truths, name: str = DEFAULT_CONVENTION,
             require_points: bool = True) -> dict:
    """predictions {sample token: [6, 2]}; ground_truths: PlanningTargets (iterable or
    {token: target}). Evaluates the targets with a full 6-step future that have a prediction;
    returns aggregate(...) plus `conventions` (all three) and `missing_predictions`."""
    targets = ground_truths.values() if isinstance(ground_truths, Mapping) else ground_truths
    samples, missing = [], 0
    for target in _full_future(targets):
        if target.token not in predictions:
            missing += 1
            continue
        samples.append(sample_metrics(predictions[target.token], target, require_points))
    return summarize(samples, name) | {"missing_predictions": missing}


def _full_future(targets: Iterable) -> Iterable:
    return (t for t in targets if bool(np.all(t.valid)))


def summarize(samples: list[dict], name: str = DEFAULT_CONVENTION) -> dict:
    """The headline convention at top level plus every convention under `conventions`."""
    out = aggregate(samples, name)
    out["conventions"] = {c: {k: v for k, v in aggregate(samples, c).items()
                              if k in ("l2_cm", "collision_pct", "intersection_pct")}
                          for c in CONVENTIONS}
    return out


__all__ = ["CONVENTIONS", "FRAME", "EGO_CENTRE_OFFSET", "EGO_LENGTH", "EGO_WIDTH", "aggregate",
           "box_corners", "cells_inside", "collisions_grid", "collisions_polygon", "ego_corners",
           "evaluate", "headings", "offroad", "outside_patch", "sample_metrics", "summarize"]
