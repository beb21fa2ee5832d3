"""nuScenes-FG-style masks on the real scene-0916: the CLI's layout, plausible coverage, annotated
objects covered where the devkit itself projects them, the road ahead, and the projection edge
cases (boxes behind / straddling the camera)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fastdrivevla_ros.data.foreground import box_polygon, fill_polygon, mask_path

EVERY = 10          # keyframes 0, 10, 20, 30, 40 of the scene: 5 samples x 6 cameras


@pytest.fixture(scope="module")
def built(scene_dir, tmp_path_factory, request):
    """Masks (+ overlays for a human) written by the CLI for every 10th keyframe. The map crop is
    kept in pytest's cache so only the first run decodes the 1.2 Gpx raster."""
    from fastdrivevla_ros.cli import main

    out = tmp_path_factory.mktemp("fg")
    cache = getattr(request.config, "cache", None)        # absent with -p no:cacheprovider
    map_cache = cache.mkdir("fastdrivevla-maps") if cache else out / "map_cache"
    rc = main(["foreground-masks", "--dataroot", str(scene_dir), "--version", "v1.0-mini",
               "--scenes", "scene-0916", "--every", str(EVERY), "--out", str(out / "masks"),
               "--overlays", str(out / "overlays"), "--no-progress",
               "--map-cache", str(map_cache)])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def nusc(scene_dir):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version="v1.0-mini", dataroot=str(scene_dir), verbose=False)


def _keyframes(nusc):
    token, out = nusc.scene[0]["first_sample_token"], []
    while token:
        out.append(nusc.get("sample", token))
        token = out[-1]["next"]
    return out[::EVERY]


def _mask(built, nusc, sd_token) -> np.ndarray:
    sd = nusc.get("sample_data", sd_token)
    return np.asarray(Image.open(mask_path(built / "masks", sd["filename"])))


def test_cli_writes_one_binary_png_per_camera_image_at_its_size(built, nusc, scene_dir):
    pngs = sorted((built / "masks" / "samples").rglob("*.png"))
    assert len(pngs) == 5 * 6
    for sample in _keyframes(nusc):
        for cam, sd_token in sample["data"].items():
            if not cam.startswith("CAM_"):
                continue
            sd = nusc.get("sample_data", sd_token)
            img = Image.open(mask_path(built / "masks", sd["filename"]))
            assert img.mode == "L" and img.size == (sd["width"], sd["height"])
            assert set(np.unique(np.asarray(img))) <= {0, 255}
            with Image.open(scene_dir / sd["filename"]) as photo:
                assert photo.size == img.size
    assert len(list((built / "overlays").rglob("*.png"))) == 5 * 6


def test_foreground_fraction_is_plausible(built):
    fractions = {p.parent.name: [] for p in (built / "masks" / "samples").rglob("*.png")}
    for p in (built / "masks" / "samples").rglob("*.png"):
        fractions[p.parent.name].append((np.asarray(Image.open(p)) > 0).mean())
    every = [f for v in fractions.values() for f in v]
    assert all(0.02 < f < 0.9 for f in every), every           # never empty, never everything
    assert 0.15 < np.mean(fractions["CAM_FRONT"]) < 0.75


def test_annotated_vehicles_and_pedestrians_are_covered(built, nusc):
    """Where the devkit's own projection (get_sample_data + view_points) puts a well-visible
    vehicle or pedestrian box, our mask is foreground."""
    import cv2
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    checked = 0
    for sample in _keyframes(nusc):
        for cam in ("CAM_FRONT", "CAM_BACK", "CAM_FRONT_LEFT", "CAM_BACK_RIGHT"):
            sd_token = sample["data"][cam]
            _, boxes, K = nusc.get_sample_data(sd_token, box_vis_level=BoxVisibility.ALL)
            mask = _mask(built, nusc, sd_token)
            for box in boxes:
                ann = nusc.get("sample_annotation", box.token)
                if (not box.name.startswith(("vehicle.", "human."))
                        or ann["visibility_token"] != "4" or ann["num_lidar_pts"] < 5):
                    continue
                corners = view_points(box.corners(), K, normalize=True)[:2].T
                inside = np.zeros_like(mask)
                cv2.fillConvexPoly(inside, cv2.convexHull(corners.astype(np.int32)), 1)
                assert (mask[inside > 0] > 0).mean() > 0.97, (cam, box.name)
                checked += 1
    assert checked >= 10        # the scene is busy: plenty of fully visible objects


def test_road_ahead_is_foreground_and_sky_is_not(built, nusc):
    for sample in _keyframes(nusc):
        mask = _mask(built, nusc, sample["data"]["CAM_FRONT"]) > 0
        h, w = mask.shape
        assert mask[int(0.85 * h):, int(0.4 * w):int(0.6 * w)].mean() > 0.8   # ground just ahead
        assert mask[:int(0.1 * h)].mean() < 0.2                               # sky / trees


def test_cli_summary_reports_per_image_cost(scene_dir, tmp_path, capsys):
    from fastdrivevla_ros.cli import main

    rc = main(["foreground-masks", "--dataroot", str(scene_dir), "--version", "v1.0-mini",
               "--cameras", "CAM_FRONT", "--every", "20", "--no-road", "--out", str(tmp_path),
               "--no-progress"])
    stats = json.loads(capsys.readouterr().out)
    assert rc == 0 and stats["written"] == 3 and stats["ms_per_image"] > 0


def test_box_wholly_behind_the_camera_is_skipped():
    K = np.array([[1000.0, 0, 800], [0, 1000, 450], [0, 0, 1]])
    corners = np.array([[-1, 1, 1, -1, -1, 1, 1, -1], [-1, -1, 1, 1, -1, -1, 1, 1],
                        [-5, -5, -5, -5, -7, -7, -7, -7]], dtype=float)
    assert box_polygon(corners, K) is None


def test_box_straddling_the_camera_fills_only_its_front_part():
    """A long box from 5 m behind to 5 m ahead, right of the optical axis: the part in front
    projects to the right half of the image; nothing lands on the left."""
    K = np.array([[1000.0, 0, 800], [0, 1000, 450], [0, 0, 1]])
    x0, x1, y0, y1 = 1.0, 3.0, -1.0, 1.0
    corners = np.array([[x0, x1, x1, x0, x0, x1, x1, x0], [y0, y0, y1, y1, y0, y0, y1, y1],
                        [-5, -5, -5, -5, 5, 5, 5, 5]], dtype=float)
    points = box_polygon(corners, K)
    assert points is not None and np.isfinite(points).all()
    mask = np.zeros((900, 1600), np.uint8)
    fill_polygon(mask, points)
    assert mask[:, :800].sum() == 0 and mask[:, 1000:].mean() > 0.5
