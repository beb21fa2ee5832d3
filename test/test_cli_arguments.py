"""Command-line arguments fail fast and clearly; every option is explained; docs keep up."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np
import pytest
from _scene import require_scene

from fastdrivevla_ros.cli import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model is an error: argument mistakes must be caught before it."""
    def load_vla(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr("fastdrivevla_ros.vla.loading.load_vla", load_vla)


@pytest.fixture
def front_jpg(tmp_path, camera_images):
    from PIL import Image

    path = tmp_path / "front.jpg"
    Image.fromarray(camera_images["CAM_FRONT"]).save(path)
    return path


def _exit_code(argv: list[str]) -> int:
    """main()'s exit code, also for mistakes argparse itself reports (SystemExit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


REPLAY_MISTAKES = [
    (["--pruning-ratio", "1.5", "--pruner", "random"], "pruning_ratio: 1.5 is outside [0.0, 0.99]"),
    (["--pruner", "nosuch"], "invalid choice: 'nosuch'"),
    (["--shard", "3/2"], "--shard 3/2: need 0 <= i < n"),
    (["--pruner", "fastv"], "prunes nothing"),
    (["--pruner", "random", "--view-ratios", "0.5", "0.5"], "view_ratios: 2 ratios for 1 cameras"),
    (["--pruner", "random", "--pruning-ratio", "0.5", "--image-size", "big"],
     "--image-size must be WxH"),
    (["--cameras", "CAM_TOP"], "cameras: unknown camera(s) ['CAM_TOP']"),
    (["--pruner", "recon", "--pruning-ratio", "0.5", "--pruner-weights", "/no/such/dir"],
     "--pruner-weights /no/such/dir: no such file"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--pruner", "recon", "--pruning-ratio", "0.5"], "is learned: give its trained weights"),
    (["--pruner", "fastv", "--pruning-ratio", "0.5", "--pruner-options", '{"nosuch": 1}'],
     "bad options for pruner 'fastv'"),
    (["--baseline", "/no/such/run"], "no metrics.json in /no/such/run"),
    (["--device", "gpu"], "device: 'gpu' is not a device"),
]


@pytest.mark.parametrize("extra, message", REPLAY_MISTAKES)
def test_replay_argument_mistakes_fail_before_any_model_load(extra, message, tiny_model_dir,
                                                             tmp_path, no_model_load, capsys):
    code = _exit_code(["replay", str(tmp_path / "bag"), "--model", str(tiny_model_dir),
                       "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "run").exists()


def test_replay_checks_the_bag_before_loading_the_model(tiny_model_dir, tmp_path, no_model_load,
                                                        capsys):
    code = main(["replay", str(tmp_path / "nobag"), "--model", str(tiny_model_dir), "--out",
                 str(tmp_path / "run")])
    assert code == 2 and "not a ROS 2 bag directory" in capsys.readouterr().err


def test_search_budgets_checks_the_bag_before_loading_the_model(tiny_model_dir, tmp_path,
                                                                no_model_load, capsys):
    code = main(["search-budgets", str(tmp_path / "nobag"), "--model", str(tiny_model_dir),
                 "--out", str(tmp_path / "s")])
    assert code == 2 and "not a ROS 2 bag directory" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--history", "1,x"], "--history: bad number"),
    (["--pruner", "fastv"], "prunes nothing"),
    (["--pruner", "nosuch", "--pruning-ratio", "0.5"], "invalid choice: 'nosuch'"),
    (["--pruning-ratio", "2"], "pruning_ratio: 2.0 is outside [0.0, 0.99]"),
])
def test_plan_argument_mistakes_fail_before_any_model_load(extra, message, tiny_model_dir,
                                                           front_jpg, no_model_load, capsys):
    code = _exit_code(["plan", "--model", str(tiny_model_dir), "--image",
                       f"CAM_FRONT={front_jpg}", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


def test_demo_argument_mistakes_fail_before_anything_is_built(tmp_path, no_model_load, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--pruner", "fastv", "--pruning-ratio", "0"]) == 2
    assert "prunes nothing" in capsys.readouterr().err
    assert not out.exists()                    # no tiny model was built either


def _configured(name: str):
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions).choices[name]
    importlib.import_module(COMMANDS[name][0]).configure_parser(sub)
    return sub


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_of_every_command_is_explained_once(name):
    sub = _configured(name)
    missing = [a.option_strings or a.dest for a in sub._actions if not a.help]
    assert not missing, f"{name}: options without help: {missing}"
    text = re.sub(r"\s+", " ", sub.format_help())
    assert "(default: None)" not in text
    assert not re.search(r"\(default: [^)]*\)[^(]{0,3}\(default:", text)


def test_replay_help_lists_the_pruners_and_its_defaults(capsys):
    from fastdrivevla_ros.pruning.registry import available_pruners

    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert ", ".join(available_pruners()) in text
    for default in ("(default: none)", "(default: CAM_FRONT)",
                    "(default: 262144)", "(default: 320)", "(default: auto)",
                    "(default: omnidrive)"):
        assert default in text


def test_the_readme_lists_every_command_and_how_to_point_tests_at_a_scene():
    readme = (REPO / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `")]
    listed = {m for line in table for m in re.findall(r"`([a-z-]+)[ `]", line)}
    assert set(COMMANDS) <= listed, f"missing from README's command table: " \
        f"{set(COMMANDS) - listed}"
    assert "FASTDRIVEVLA_SCENE=" in readme and "CI=true" in readme
    assert ".jpg replaced by .png" in readme


def test_demo_says_its_weights_are_random_and_heatmaps_have_a_legend(tmp_path, monkeypatch):
    from PIL import Image

    from fastdrivevla_ros.viz.heatmap import LEGEND_PX

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cameras", "CAM_FRONT", "--max-pixels",
                 "3136"]) == 0
    assert "weights are random" in (out / "summary.md").read_text()
    heatmap = np.asarray(Image.open(out / "heatmap_CAM_FRONT.png"))
    assert heatmap.shape[0] == 2 * 28 + LEGEND_PX     # the 2x3-token overlay + its legend
    legend = heatmap[-LEGEND_PX:].reshape(-1, 3)
    assert (legend == (32, 32, 32)).all(1).any()       # the 'pruned' swatch


def test_a_missing_scene_fails_under_ci_and_says_how_to_point_at_one(tmp_path):
    env = {"FASTDRIVEVLA_SCENE": str(tmp_path / "none")}
    with pytest.raises(pytest.fail.Exception, match="FASTDRIVEVLA_SCENE=DIR"):
        require_scene(env | {"CI": "true"})
    with pytest.raises(pytest.skip.Exception, match="set FASTDRIVEVLA_SCENE=DIR"):
        require_scene(env)


def test_no_command_help_imports_torch_or_transformers():
    """The lazy-import property behind `--help` < 2 s (timed in benchmarks/help_times.py)."""
    import subprocess
    import sys

    code = ("import contextlib, io, sys\n"
            "from fastdrivevla_ros.cli import COMMANDS, main\n"
            "for name in COMMANDS:\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        main([name, '--help'])\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
