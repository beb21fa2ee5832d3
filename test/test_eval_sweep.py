"""`fastdrivevla sweep` on a local Ray (2 CPUs): the same records as serial replays, worker
faults, reruns, a model that cannot load, Ray missing."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time

import pytest
from _bags import converted_bag

from fastdrivevla_ros.cli import main

ray = pytest.importorskip("ray", reason="the [cluster] extra (ray) is not installed")

PRUNERS, RATIOS = "fastv,random", "0.5,0.75"
SETTINGS = [("none", None), ("fastv", 0.5), ("fastv", 0.75), ("random", 0.5), ("random", 0.75)]
# the tiny model at 2x3 tokens per view with 8 new tokens: cheap, every stage still runs
FLAGS = ["--max-pixels", "3136", "--max-new-tokens", "8", "--no-constrained"]


@pytest.fixture(scope="module")
def bags(scene_dir):
    """scene-0916 split by keyframes into two bags: keyframes 0-1 and 2-3."""
    return [converted_bag(scene_dir, max_keyframes=2),
            converted_bag(scene_dir, max_keyframes=2, first_keyframe=2)]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One loopback Ray with 2 CPUs for the module (the sweep uses a Ray already running),
    shut down at the end whatever happened (memory is shared)."""
    from fastdrivevla_ros.eval.sweep import start_ray

    start_ray(None, workers=2)
    yield
    ray.shutdown()


def _records(run_dir) -> list[dict]:
    """predictions.jsonl minus wall-clock timings, checking each sample is there once."""
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    tokens = [r["token"] for r in records]
    assert len(tokens) == len(set(tokens)), f"duplicate records in {run_dir}"
    return sorted(({k: v for k, v in r.items() if k != "timings_ms"} for r in records),
                  key=lambda r: r["ordinal"])


def _manifest(run_dir) -> dict:
    m = json.loads((run_dir / "shard.json").read_text())
    return {k: v for k, v in m.items() if k != "bag"}


def _folder(setting) -> str:
    pruner, ratio = setting
    return pruner if ratio is None else f"{pruner}-{ratio:g}"


@pytest.fixture(scope="module")
def serial(bags, tiny_vla, tiny_model_dir, tmp_path_factory):
    """What `fastdrivevla replay BAG --model M --pruner P --pruning-ratio R` FLAGS writes, for
    every setting and bag: replay_bag through a fresh engine per run (the weights are loaded
    once for the test's speed; the CLI loads the same files)."""
    from fastdrivevla_ros.eval.replay import replay_bag
    from fastdrivevla_ros.pruning.registry import build_pruner
    from fastdrivevla_ros.vla.engine import DrivingVLA, PlannerSettings

    root = tmp_path_factory.mktemp("serial")
    for pruner, ratio in SETTINGS:
        for bag in bags:
            settings = PlannerSettings(max_pixels=3136, max_new_tokens=8, constrained=False,
                                       **({"pruning_ratio": ratio} if ratio else {}))
            engine = DrivingVLA(*tiny_vla, settings, build_pruner(pruner))
            replay_bag(bag, engine, root / _folder((pruner, ratio)) / bag.name,
                       model=str(tiny_model_dir), progress=False)
    return root


def _sweep(bags, model, out, pruners=PRUNERS, ratios=RATIOS) -> int:
    return main(["sweep", *map(str, bags), "--model", str(model), "--out", str(out),
                 "--pruners", pruners, "--ratios", ratios, "--workers", "2", *FLAGS,
                 "--no-progress"])


def _assert_same_as_serial(sweep_dir, serial_dir, bags, settings=SETTINGS) -> None:
    for setting in settings:
        for bag in bags:
            got, want = (d / _folder(setting) / bag.name for d in (sweep_dir, serial_dir))
            assert _records(got) == _records(want), f"{got} differs from {want}"
            assert _manifest(got) == _manifest(want)


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def swept(bags, tiny_model_dir, tmp_path_factory):
    """(sweep dir, the command's summary) of 2 pruners x 2 ratios (+ none) on 2 bags."""
    out = tmp_path_factory.mktemp("sweep") / "S"
    with pytest.MonkeyPatch.context() as mp:
        buf = io.StringIO()
        mp.setattr(sys, "stdout", buf)
        assert _sweep(bags, tiny_model_dir, out) == 0
    return out, json.loads(buf.getvalue().strip().splitlines()[-1])


def test_a_sweep_equals_the_serial_replays_record_for_record(swept, serial, bags):
    swept, summary = swept
    # two workers, each loaded the model once and switched pruner / ratio for its tasks
    assert summary["done"] == 10 and summary["model_loads"] == summary["worker_processes"] == 2
    _assert_same_as_serial(swept, serial, bags)
    report = (swept / "report.md").read_text()
    for row in ("unpruned", "fastv, 50% kept", "random, 17% kept"):
        assert f"| {row} |" in report
    for plot in ("metrics_vs_kept.png", "latency_vs_ratio.png", "l2_horizon.png"):
        assert (swept / plot).stat().st_size > 1000


def _snapshot(root) -> dict:
    """Every run folder's files (the sweep-level report is rewritten by design)."""
    return {p: p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.parent != root and p.name != "report.md" and p.suffix != ".png"}


def test_a_rerun_recomputes_nothing(swept, bags, tiny_model_dir, capsys):
    swept = swept[0]
    before = _snapshot(swept)
    capsys.readouterr()
    assert _sweep(bags, tiny_model_dir, swept) == 0
    summary = _summary(capsys)
    assert summary["skipped"] == summary["tasks"] == 10 and summary["done"] == 0
    assert _snapshot(swept) == before


def _ray_workers_running() -> list:
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "ray::Worker.run" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _mid_task(sweep_dir) -> bool:
    """Some run folder has predictions but has not finished yet."""
    for manifest in sweep_dir.glob("*/*/shard.json"):
        preds = manifest.parent / "predictions.jsonl"
        if preds.is_file() and preds.stat().st_size and \
                json.loads(manifest.read_text()).get("expected") is None:
            return True
    return False


def test_a_worker_killed_mid_sweep_leaves_the_same_records(bags, tiny_model_dir, serial,
                                                           tmp_path, capsys):
    out = tmp_path / "S"
    killed = []

    def killer():
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            if _mid_task(out):
                workers = _ray_workers_running()
                if workers:
                    os.kill(workers[0].pid, signal.SIGKILL)
                    killed.append(workers[0].pid)
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    code = _sweep(bags, tiny_model_dir, out, "random", "0.5")
    thread.join()
    assert killed, "no worker was caught mid-task"
    assert code == 0, capsys.readouterr().err
    _assert_same_as_serial(out, serial, bags, [("none", None), ("random", 0.5)])


def test_a_model_that_cannot_load_is_one_line_exit_2(bags, tiny_model_dir, tmp_path, capsys):
    import shutil

    # passes every check made before the sweep starts (config, weights' headers, tokenizer),
    # so the workers themselves fail: the weights do not fit the config's shapes
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["text_config"]["intermediate_size"] *= 2
    (broken / "config.json").write_text(json.dumps(config))
    out = tmp_path / "S"
    started = time.monotonic()
    assert _sweep(bags, broken, out, "random", "0.5") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load" in err[0], err
    assert time.monotonic() - started < 120
    assert not out.exists() or not any(out.rglob("predictions.jsonl"))


@pytest.mark.parametrize("extra, message", [
    (["--ratios", "0"], "ratios must lie in (0, 1)"),
    (["--pruners", "fastv,nope"], "unknown pruner 'nope'"),
    (["--options", 'random={"seed": 1}'], "options given for pruners not in the sweep"),
    (["--options", "fastv={bad"], "not valid JSON"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_mistakes_are_one_line_before_anything_starts(extra, message, bags, tiny_model_dir,
                                                      tmp_path, capsys):
    args = ["sweep", *map(str, bags), "--model", str(tiny_model_dir), "--out",
            str(tmp_path / "S"), "--pruners", "fastv", "--ratios", "0.5", *FLAGS]
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "S").exists()


def test_without_ray_sweep_says_how_to_install_it(bags, tiny_model_dir, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)       # import ray -> ImportError
    assert _sweep(bags, tiny_model_dir, tmp_path / "S") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "fastdrivevla_ros[cluster]"' in err[0], err
    assert not (tmp_path / "S").exists()
