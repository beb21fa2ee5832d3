"""`fastdrivevla search-budgets`: TPE over per-view retention rates on a real converted bag,
writing a node config whose per-view ratios change the per-view token counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from _bags import converted_bag

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.pipeline.params import load_parameter_file

CAMS = ["CAM_FRONT", "CAM_BACK"]
DRIVE_YAML = Path(__file__).resolve().parents[1] / "config" / "drive.yaml"


@pytest.fixture(scope="module")
def bag(scene_dir):
    return converted_bag(scene_dir, max_keyframes=6)


def test_search_budgets_end_to_end_writes_per_view_ratios(bag, tiny_model_dir, tmp_path,
                                                          camera_images, capsys):
    from fastdrivevla_ros.cli import main
    from fastdrivevla_ros.vla.engine import DrivingVLA

    out, config = tmp_path / "search", tmp_path / "budgets.yaml"
    argv = ["search-budgets", str(bag), "--model", str(tiny_model_dir), "--cameras", *CAMS,
            "--trials", "3", "--limit", "2", "--seed", "7", "--max-pixels", "12544",
            "--max-new-tokens", "4", "--no-constrained", "--out", str(out),
            "--config-out", str(config), "--base-config", str(DRIVE_YAML), "--no-progress"]
    assert main(argv) == 0
    search = json.loads((out / "search.json").read_text())
    trials = search["trials"]
    assert len(trials) == 3 and search["lambda"] == 0.03
    # the L2 scale: the unpruned run on the same keyframes, replayed first
    reference = json.loads((out / "reference" / "metrics.json").read_text())
    assert reference["tokens_kept_mean"] == reference["tokens_total_mean"]
    assert search["reference_l2_m"] == pytest.approx(reference["l2_cm"]["avg"] / 100)
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    for t in trials:
        assert all(0.1 <= r <= 1.0 for r in t["rates"])
        relative = t["l2_avg_m"] / search["reference_l2_m"]
        assert t["objective"] == pytest.approx(-relative - 0.03 * sum(t["rates"]))
        assert (out / f"trial_{t['number']:04d}" / "metrics.json").is_file()
        # both terms of every trial are shown
        assert f"{relative:.4f} x unpruned | penalty {t['penalty']:.4f}" in printed
    best = max(trials, key=lambda t: t["objective"])
    assert search["best"]["number"] == best["number"]

    params = load_parameter_file(config)              # a valid ROS 2 parameter file
    assert params["pruner"] == "tfps" and params["cameras"] == CAMS
    assert params["view_ratios"] == pytest.approx([1 - r for r in best["rates"]], abs=1e-4)
    assert params["max_pixels"] == 12544 and params["odom_topic"] == "ego/odometry"
    assert yaml.safe_load(config.read_text())        # plain YAML too

    engine = DrivingVLA.from_pretrained(tiny_model_dir, pruner=params["pruner"],
                                        cameras=tuple(params["cameras"]),
                                        max_pixels=params["max_pixels"],
                                        view_ratios=tuple(params["view_ratios"]),
                                        max_new_tokens=2)
    result = engine.plan({c: camera_images[c] for c in CAMS})
    for view, ratio in zip(result.views, params["view_ratios"]):
        n = view.grid[0] * view.grid[1]
        assert len(view.kept) == max(1, int(np.floor(n * (1 - ratio) + 1e-9))) < n


def test_search_rejects_bad_settings(tiny_vla, tmp_path):
    from fastdrivevla_ros.pruning.budget_search import search_budgets
    from fastdrivevla_ros.vla.engine import DrivingVLA

    engine = DrivingVLA(*tiny_vla)
    with pytest.raises(ConfigError, match="trials"):
        search_budgets("unused", engine, tmp_path, trials=0)
    with pytest.raises(ConfigError, match="range"):
        search_budgets("unused", engine, tmp_path, rate_range=(0.0, 1.0))
