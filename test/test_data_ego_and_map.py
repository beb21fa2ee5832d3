"""Ego motion (CAN bus or derived from poses) and drivable-area patches (raster or expansion)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastdrivevla_ros.data.drivable import FREE, OCCUPIED, UNKNOWN, MapExpansion, \
    SemanticPriorRaster
from fastdrivevla_ros.data.ego import WHEELBASE_M, PoseTrack


def test_motion_derived_from_a_circular_pose_track():
    # 5 m/s on a left circle of radius 20 m: yaw rate 0.25 rad/s, lateral acc. v^2/R
    t = np.arange(0, 10, 0.05)
    theta = 0.25 * t
    xy = np.stack([20 * np.sin(theta), 20 * (1 - np.cos(theta))], 1)
    m = PoseTrack(t, xy, theta).motion(5.0)
    assert m.source == "ego_pose" and m.steering_kind == "road_wheel"
    assert m.speed == pytest.approx(5.0, abs=0.01)
    assert m.velocity[1] == pytest.approx(0.0, abs=0.01)
    assert m.yaw_rate == pytest.approx(0.25, abs=1e-3)
    assert m.acceleration[0] == pytest.approx(0.0, abs=0.02)
    assert m.acceleration[1] == pytest.approx(25 / 20, abs=0.02)
    assert m.steering == pytest.approx(math.atan(WHEELBASE_M * 0.25 / 5.0), abs=1e-3)


def _link(src: Path, dst: Path) -> Path:
    for name in ("v1.0-mini", "samples", "maps"):
        (dst / name).symlink_to(src / name)
    return dst


def test_can_bus_motion_is_used_when_the_expansion_is_present(scene_dir, tmp_path):
    from fastdrivevla_ros.data.scene import SceneTruth, open_nuscenes

    root = _link(scene_dir, tmp_path)
    nusc = open_nuscenes(root, "v1.0-mini")
    t0 = nusc.sample[0]["timestamp"] - 1_000_000
    pose = [{"utime": t0 + 20_000 * i, "vel": [3.0 + 0.001 * i, 0.1, 0.0],
             "accel": [0.5, -0.2, 9.8], "rotation_rate": [0.0, 0.0, 0.01 * (i % 7)],
             "pos": [0, 0, 0], "orientation": [1, 0, 0, 0]} for i in range(1500)]
    steer = [{"utime": t0 + 10_000 * i, "value": 0.001 * i} for i in range(3000)]
    (root / "can_bus").mkdir()
    (root / "can_bus" / "scene-0916_pose.json").write_text(json.dumps(pose))
    (root / "can_bus" / "scene-0916_steeranglefeedback.json").write_text(json.dumps(steer))
    scene = SceneTruth(nusc, nusc.scene[0], root)
    assert scene.motion_source == "can_bus"
    truth = scene.keyframe(3)
    i = round((truth.utime - t0) / 20_000)          # the nearest 50 Hz pose message
    j = round((truth.utime - t0) / 10_000)
    m = truth.motion
    assert (m.source, m.steering_kind) == ("can_bus", "steering_wheel")
    assert m.speed == pose[i]["vel"][0] and m.yaw_rate == pose[i]["rotation_rate"][2]
    assert m.acceleration == (0.5, -0.2) and m.steering == steer[j]["value"]


def test_raster_patch_uses_the_devkit_mapmask_pixel_convention(tmp_path):
    """Our cropped lookup agrees with nuscenes.utils.map_mask.MapMask on a small raster."""
    from nuscenes.utils.map_mask import MapMask

    rng = np.random.default_rng(0)
    img = (rng.random((300, 400)) > 0.5).astype(np.uint8) * 255
    png = tmp_path / "map.png"
    Image.fromarray(img).save(png)
    raster = SemanticPriorRaster(png, (5.0, 5.0, 35.0, 25.0))
    x = rng.uniform(6, 34, 500)
    y = rng.uniform(6, 24, 500)
    ours = raster.lookup(x, y)
    devkit = MapMask(str(png), resolution=0.1).is_on_mask(x, y)
    np.testing.assert_array_equal(ours == FREE, devkit)
    assert set(np.unique(ours)) <= {FREE, OCCUPIED}
    assert raster.lookup(np.array([-5.0]), np.array([10.0]))[0] == UNKNOWN


def test_raster_patch_is_ego_centred_and_turns_with_the_ego(tmp_path):
    # drivable only north of y = 10 m: facing east (yaw 0) it is on the LEFT (+y, upper rows),
    # facing north (yaw pi/2) it is AHEAD (+x, right columns)
    img = np.zeros((200, 200), np.uint8)
    img[: 200 - 100, :] = 255                       # rows above y = 10 m
    Image.fromarray(img).save(tmp_path / "map.png")
    raster = SemanticPriorRaster(tmp_path / "map.png", (0.0, 0.0, 20.0, 20.0))
    east = raster.patch((10.0, 10.0), 0.0, 8.0, 0.5)
    north = raster.patch((10.0, 10.0), math.pi / 2, 8.0, 0.5)
    assert (east[9:] == FREE).all() and (east[:7] == OCCUPIED).all()
    assert (north[:, 9:] == FREE).all() and (north[:, :7] == OCCUPIED).all()


def _expansion(root: Path) -> None:
    """A minimal map expansion: one drivable square north of (100, 200)."""
    (root / "maps" / "expansion").mkdir(parents=True)
    pts = [(80, 200), (120, 200), (120, 220), (80, 220)]
    obj = {"version": "1.3", "canvas_edge": [3228.6, 3687.1],
           "node": [{"token": f"n{i}", "x": x, "y": y} for i, (x, y) in enumerate(pts)],
           "line": [], "polygon": [{"token": "p0", "holes": [],
                                    "exterior_node_tokens": [f"n{i}" for i in range(4)]}],
           "drivable_area": [{"token": "d0", "polygon_tokens": ["p0"]}],
           "connectivity": {}, "arcline_path_3": {}}
    for layer in ("road_segment", "road_block", "lane", "ped_crossing", "walkway", "stop_line",
                  "carpark_area", "lane_connector", "road_divider", "lane_divider",
                  "traffic_light"):
        obj[layer] = []
    (root / "maps" / "expansion" / "singapore-queenstown.json").write_text(json.dumps(obj))


def test_map_expansion_patch_has_the_same_layout(tmp_path):
    _expansion(tmp_path)
    assert MapExpansion.available(tmp_path, "singapore-queenstown")
    m = MapExpansion(tmp_path, "singapore-queenstown")
    east = m.patch((100.0, 200.0), 0.0, 40.0, 0.5)
    north = m.patch((100.0, 200.0), math.pi / 2, 40.0, 0.5)
    assert (east[41:] == FREE).all() and (east[:39] == OCCUPIED).all()
    assert (north[:, 41:] == FREE).all() and (north[:, :39] == OCCUPIED).all()
