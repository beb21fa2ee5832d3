"""Heatmaps show what was kept; the demo and plan commands work from a fresh checkout."""

import json

import numpy as np
import pytest

from fastdrivevla_ros.cli import main
from fastdrivevla_ros.vla.result import ViewResult
from fastdrivevla_ros.viz.heatmap import kept_mask, mosaic, token_overlay


def _view(camera="CAM_FRONT", grid=(2, 3), kept=(0, 4), scores=None):
    image = np.full((grid[0] * 28, grid[1] * 28, 3), 200, np.uint8)
    return ViewResult(camera, grid, np.array(kept), scores, image)


def test_overlay_darkens_exactly_the_pruned_tokens():
    out = token_overlay(_view())
    tile_mean = out.reshape(2, 28, 3, 28, 3).mean(axis=(1, 3, 4))
    kept = kept_mask(_view())
    assert (tile_mean[kept] > 150).all() and (tile_mean[~kept] < 60).all()


def test_overlay_colours_kept_tokens_by_saliency_rank():
    scores = np.array([0.0, np.nan, np.nan, np.nan, 1.0, np.nan])
    out = token_overlay(_view(scores=scores)).astype(int)
    low, high = out[14, 14], out[28 + 14, 28 + 14]      # token 0 (low), token 4 (high)
    assert low[2] > low[0] and high[0] > high[2]          # jet: blue for low, red for high


def test_mosaic_is_two_by_three_and_marks_unused_cameras():
    views = [_view("CAM_FRONT"), _view("CAM_BACK_LEFT")]
    out = mosaic(views, tile_size=(60, 40))
    assert out.shape == (80, 180, 3) and out.dtype == np.uint8
    unused = out[40:80, 120:180]                         # CAM_BACK_RIGHT tile
    assert np.median(unused) == 64


def test_cli_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for name in ("demo", "make-tiny-model", "plan"):
        assert name in text


def test_demo_writes_plan_heatmaps_and_summary(tmp_path, tiny_model_dir):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--model", str(tiny_model_dir), "--pruner", "random",
                 "--cameras", "CAM_FRONT,CAM_BACK"])
    assert code == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["status"] == "ok" and len(plan["waypoints"]) == 6
    assert plan["tokens_kept"] == plan["tokens_total"] // 2
    for name in ("trajectory.png", "mosaic.png", "heatmap_CAM_FRONT.png", "summary.md"):
        assert (out / name).stat().st_size > 0


def test_plan_command_reports_bad_image_argument_without_traceback(tiny_model_dir, capsys):
    code = main(["plan", "--model", str(tiny_model_dir), "--image", "CAM_TOP=x.jpg"])
    assert code == 2
    assert "CAMERA=PATH" in capsys.readouterr().err


def test_plan_command_plans_from_image_files(tiny_model_dir, tmp_path, camera_images):
    from PIL import Image

    path = tmp_path / "front.jpg"
    Image.fromarray(camera_images["CAM_FRONT"]).save(path)
    code = main(["plan", "--model", str(tiny_model_dir), "--image", f"CAM_FRONT={path}",
                 "--history=-2,0,4;0,0,4", "--pruner", "random", "--pruning-ratio", "0.75",
                 "--out", str(tmp_path / "o")])
    assert code == 0
    plan = json.loads((tmp_path / "o" / "plan.json").read_text())
    assert plan["tokens_kept"] == 84 and plan["pruner"] == "random"


def test_command_help_shows_the_commands_own_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["plan", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--pruning-ratio" in out and "--image" in out
