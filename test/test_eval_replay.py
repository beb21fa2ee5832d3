"""Replay of a converted bag through the tiny model: outputs, resume, shards + merge, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from _bags import converted_bag

from fastdrivevla_ros.errors import ConfigError, DataError
from fastdrivevla_ros.eval.merge import merge_runs
from fastdrivevla_ros.eval.replay import replay_bag
from fastdrivevla_ros.pruning.base import PruneContext, Pruner

KEYFRAMES = 6          # the first 6 keyframes of scene-0916 (all with a full 3 s future)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model is latency-bound: on a shared 2-core machine 2 intra-op threads spin
    against other processes and run ~10x slower than 1."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bag(scene_dir):
    return converted_bag(scene_dir, max_keyframes=KEYFRAMES)


def make_engine(tiny_vla, pruner="none", ratio=0.0):
    """The tiny model at a tiny resolution (2x3 tokens) with 8 new tokens: cheap, and every
    stage (vision, pruning, prefill, decode, parsing) still runs."""
    from fastdrivevla_ros.pruning.registry import build_pruner
    from fastdrivevla_ros.vla.engine import DrivingVLA, PlannerSettings

    model, tok, proc = tiny_vla
    pruner = build_pruner(pruner) if isinstance(pruner, str) else pruner
    return DrivingVLA(model, tok, proc, PlannerSettings(max_new_tokens=8, max_pixels=3136,
                                                        pruning_ratio=ratio, constrained=False),
                      pruner)


@pytest.fixture(scope="module")
def unpruned_run(bag, tiny_vla, tmp_path_factory):
    out = tmp_path_factory.mktemp("unpruned")
    metrics = replay_bag(bag, make_engine(tiny_vla), out, progress=False)
    return out, metrics


def _lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def _plans(run_dir) -> list[tuple]:
    return [(r["token"], r["waypoints"], r["status"], r["text"], r["views"])
            for r in _lines(run_dir)]


SCORES = ("samples", "convention", "l2_cm", "collision_pct", "intersection_pct", "conventions",
          "parse_failed", "frames")


def test_replay_with_two_pruners_writes_every_output(bag, tiny_vla, unpruned_run, tmp_path):
    from rosbags.rosbag2 import Reader

    base_dir, base = unpruned_run
    out = tmp_path / "random50"
    m = replay_bag(bag, make_engine(tiny_vla, "random", 0.5), out, baseline=base_dir,
                   output_bag=True, progress=False)
    for run_dir, metrics in ((base_dir, base), (out, m)):
        assert {p.name for p in run_dir.iterdir()} >= {
            "predictions.jsonl", "metrics.json", "shard.json", "report.md", "l2_horizon.png"}
        written = json.loads((run_dir / "metrics.json").read_text())
        assert written == json.loads(json.dumps(metrics))
        assert metrics["samples"] == KEYFRAMES and metrics["frames"] == KEYFRAMES
        for key in ("l2_cm", "collision_pct", "intersection_pct"):
            assert set(metrics[key]) == {"1s", "2s", "3s", "avg"}
    records = _lines(out)
    assert len(records) == KEYFRAMES and len({r["token"] for r in records}) == KEYFRAMES
    assert all(r["tokens_kept"] == 3 and r["tokens_total"] == 6 for r in records)
    assert (m["pruner"], m["pruning_ratio"]) == ("random", 0.5)
    report = (out / "report.md").read_text()
    assert "| unpruned |" in report and "| random, 50% kept |" in report and "Rel." in report
    with Reader(out / "predictions_bag") as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts == {"/planning/predicted/path": KEYFRAMES,
                      "/planning/heatmap/CAM_FRONT/compressed": KEYFRAMES}


class _DiesAfter:
    """The engine, killed (KeyboardInterrupt) when asked for its n-th plan."""

    def __init__(self, engine, n: int):
        self.engine, self.n = engine, n

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def plan(self, *args, **kwargs):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt
        return self.engine.plan(*args, **kwargs)


def test_a_killed_run_resumes_with_exactly_one_prediction_per_sample(bag, tiny_vla, unpruned_run,
                                                                      tmp_path):
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        replay_bag(bag, _DiesAfter(make_engine(tiny_vla), 4), out, progress=False)
    assert len(_lines(out)) == 3
    with open(out / "predictions.jsonl", "a") as f:      # a write torn by the kill
        f.write('{"token": "0bb62a68055249e3')
    replay_bag(bag, make_engine(tiny_vla), out, progress=False)
    assert _plans(out) == _plans(unpruned_run[0])


def test_two_shards_merged_equal_the_unsharded_run(bag, tiny_vla, unpruned_run, tmp_path):
    base_dir, base = unpruned_run
    shards = [tmp_path / f"shard{i}" for i in range(2)]
    for i, d in enumerate(shards):
        replay_bag(bag, make_engine(tiny_vla), d, shard=(i, 2), progress=False)
    assert [len(_lines(d)) for d in shards] == [3, 3]
    merged = merge_runs(tmp_path / "merged", shards)
    assert _plans(tmp_path / "merged") == _plans(base_dir)
    assert {k: merged[k] for k in SCORES} == {k: base[k] for k in SCORES}
    with pytest.raises(DataError, match="no metrics.json"):     # fails after writing
        merge_runs(tmp_path / "half", shards, baseline=tmp_path / "no-such-run")
    assert not (tmp_path / "half").exists()                   # no half-written merge left


def test_merge_refuses_missing_unfinished_or_duplicated_shards(bag, tiny_vla, unpruned_run,
                                                               tmp_path):
    only = tmp_path / "only0"
    replay_bag(bag, make_engine(tiny_vla), only, shard=(0, 2), progress=False)
    with pytest.raises(DataError, match="need shards 0..1 of 2 exactly once"):
        merge_runs(tmp_path / "m1", [only])
    with pytest.raises(DataError, match="need shards"):
        merge_runs(tmp_path / "m2", [only, only])
    cut = tmp_path / "cut1"
    replay_bag(bag, make_engine(tiny_vla), cut, shard=(1, 2), limit=1, progress=False)
    with pytest.raises(DataError, match="shard 1/2 .* did not finish"):
        merge_runs(tmp_path / "m3", [only, cut])
    with pytest.raises(DataError, match="not shards of one run .*pruner"):
        merge_runs(tmp_path / "m4", [only, _gt_run(bag, tmp_path / "gt", shard=(1, 2))])


def _gt_run(bag, out, shard=(0, 1)):
    replay_bag(bag, None, out, shard=shard, gt_as_prediction=True, progress=False)
    return out


def test_a_run_directory_is_not_reused_for_another_run(bag, tiny_vla, unpruned_run):
    with pytest.raises(ConfigError, match="holds a different run"):
        replay_bag(bag, make_engine(tiny_vla, "random", 0.5), unpruned_run[0], progress=False)


class _HistoryPruner(Pruner):
    """A temporal pruner: which tokens it keeps depends on how many plans it has seen in the
    current scene (like VLA-Pruner's decode-attention memory)."""

    name = "history_test"
    record_decode_layers = (0,)

    def __init__(self):
        self.seen = 0

    def reset(self) -> None:
        self.seen = 0

    def observe(self, record: dict) -> None:
        self.seen += 1

    def score(self, ctx: PruneContext) -> list[torch.Tensor]:
        return [torch.roll(torch.arange(len(v.indices), dtype=torch.float32), self.seen)
                for v in ctx.views]


def test_a_temporal_pruner_resumed_mid_scene_rebuilds_its_state(bag, tiny_vla, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    replay_bag(bag, make_engine(tiny_vla, _HistoryPruner(), 0.5), straight, limit=4,
               progress=False)
    kept = [r["views"][0]["kept"] for r in _lines(straight)]
    assert len({tuple(k) for k in kept}) > 1            # the state really changes the selection
    with pytest.raises(KeyboardInterrupt):
        replay_bag(bag, _DiesAfter(make_engine(tiny_vla, _HistoryPruner(), 0.5), 3), resumed,
                   limit=4, progress=False)
    replay_bag(bag, make_engine(tiny_vla, _HistoryPruner(), 0.5), resumed, limit=4,
               progress=False)
    assert _plans(resumed) == _plans(straight)
    manifest = json.loads((straight / "shard.json").read_text())
    assert manifest["temporal_sharding"] is True        # shards would split by scene


def test_cli_ground_truth_self_check_on_the_whole_scene(scene_dir, tmp_path, capsys):
    from fastdrivevla_ros.cli import main

    out = tmp_path / "gt"
    assert main(["replay", str(converted_bag(scene_dir)), "--ground-truth-as-prediction",
                 "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["samples"] == 35 and m["frames"] == 41
    assert m["l2_cm"] == m["collision_pct"] == m["intersection_pct"] == \
        {"1s": 0.0, "2s": 0.0, "3s": 0.0, "avg": 0.0}
    assert "35 samples" in capsys.readouterr().out


def test_cli_replay_then_report_compares_runs(bag, tiny_model_dir, unpruned_run, tmp_path):
    from fastdrivevla_ros.cli import main

    out = tmp_path / "cli"
    assert main(["replay", str(bag), "--model", str(tiny_model_dir), "--pruner", "random",
                 "--pruning-ratio", "0.75", "--out", str(out), "--limit", "2",
                 "--max-pixels", "3136", "--max-new-tokens", "4", "--no-constrained",
                 "--no-progress"]) == 0
    assert len(_lines(out)) == 2
    assert main(["report", str(unpruned_run[0]), str(out), "--out", str(tmp_path / "cmp"),
                 "--baseline", str(unpruned_run[0]), "--intersect"]) == 0
    assert (tmp_path / "cmp" / "metrics_vs_ratio.png").stat().st_size > 0
    assert "random, 17% kept" in (tmp_path / "cmp" / "report.md").read_text()
    assert main(["replay", str(bag), "--out", str(tmp_path / "x")]) == 2   # no --model


def test_cli_replay_uses_the_per_camera_budgets_search_budgets_wrote(bag, tiny_model_dir,
                                                                     tmp_path):
    from fastdrivevla_ros.cli import main

    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("/**:\n  ros__parameters:\n    pruner: tfps\n"
                       "    cameras: [CAM_FRONT, CAM_BACK]\n    view_ratios: [0.25, 0.75]\n")
    common = ["--model", str(tiny_model_dir), "--pruner", "random", "--limit", "1",
              "--max-pixels", "3136", "--max-new-tokens", "2", "--no-constrained",
              "--no-progress"]
    out = tmp_path / "budgets"
    assert main(["replay", str(bag), "--out", str(out), "--budgets", str(budgets), *common]) == 0
    views = _lines(out)[0]["views"]
    assert [v["camera"] for v in views] == ["CAM_FRONT", "CAM_BACK"]
    n = [v["grid"][0] * v["grid"][1] for v in views]
    assert [len(v["kept"]) for v in views] == [int(n[0] * 0.75), int(n[1] * 0.25)]
    assert main(["replay", str(bag), "--out", str(tmp_path / "both"), "--budgets", str(budgets),
                 "--view-ratios", "0.5", *common]) == 2     # the flag wins: 1 ratio, 2 cameras
    assert main(["replay", str(bag), "--out", str(tmp_path / "count"), "--view-ratios", "0.5",
                 "0.5", *common]) == 2                                # 2 ratios, 1 camera


def test_an_unusable_image_stops_the_run_or_is_recorded_as_an_error(scene_dir, tiny_vla,
                                                                     tmp_path):
    from fastdrivevla_ros.data.nuscenes_bag import convert

    root = tmp_path / "root"
    for name in ("v1.0-mini", "maps"):
        (root / name).mkdir(parents=True)
        for f in (scene_dir / name).iterdir():
            (root / name / f.name).symlink_to(f)
    (root / "samples").symlink_to(scene_dir / "samples")
    samples = json.loads((scene_dir / "v1.0-mini" / "sample.json").read_text())
    second = next(s for s in samples if not s["prev"])["next"]
    table = json.loads((scene_dir / "v1.0-mini" / "sample_data.json").read_text())
    for rec in table:      # point keyframe 2's CAM_FRONT at a file that is not a JPEG
        if rec["sample_token"] == second and "CAM_FRONT/" in rec["filename"]:
            rec["filename"] = "samples/broken.jpg"
    (root / "v1.0-mini" / "sample_data.json").unlink()
    (root / "v1.0-mini" / "sample_data.json").write_text(json.dumps(table))
    (root / "samples").unlink()
    (root / "samples").mkdir()
    for cam in (scene_dir / "samples").iterdir():
        (root / "samples" / cam.name).symlink_to(cam)
    (root / "samples" / "broken.jpg").write_bytes(b"not a jpeg")
    bag = tmp_path / "bag"
    convert(root, "v1.0-mini", bag, max_keyframes=3, progress=False)
    with pytest.raises(DataError, match=f"keyframe {second} .*cannot decode CAM_FRONT"):
        replay_bag(bag, make_engine(tiny_vla), tmp_path / "stop", progress=False)
    m = replay_bag(bag, make_engine(tiny_vla), tmp_path / "skip", on_error="skip",
                   progress=False)
    assert m["errors"] == [second] and m["samples"] == 2 and m["frames"] == 3


# ------------------------------------------------------------------ run folders (issue 14)
def _snapshot(run_dir) -> dict:
    """Every file of a run folder and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_resuming_with_other_settings_is_refused_and_nothing_is_written(bag, tiny_vla,
                                                                        tiny_model_dir, tmp_path,
                                                                        capsys):
    from fastdrivevla_ros.cli import main

    out = tmp_path / "fastv"
    with pytest.raises(KeyboardInterrupt):
        replay_bag(bag, _DiesAfter(make_engine(tiny_vla, "fastv", 0.5), 3), out, progress=False)
    manifest = json.loads((out / "shard.json").read_text())   # written before any prediction
    assert manifest["pruner"] == "fastv" and manifest["complete"] is False
    assert len(_lines(out)) == 2
    before = _snapshot(out)
    with pytest.raises(ConfigError, match="holds a different run .*pruner: 'fastv' != 'none'"):
        replay_bag(bag, make_engine(tiny_vla), out, progress=False)
    assert _snapshot(out) == before
    code = main(["replay", str(bag), "--model", str(tiny_model_dir), "--out", str(out),
                 "--max-pixels", "3136", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "pruner: 'fastv' != 'none'" in err and len(err.splitlines()) == 1
    assert _snapshot(out) == before


class _Blocks:
    """The engine, holding its first plan until released (a long replay in progress)."""

    def __init__(self, engine):
        import threading

        self.engine, self.started, self.release = engine, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def plan(self, *args, **kwargs):
        self.started.set()
        assert self.release.wait(120)
        return self.engine.plan(*args, **kwargs)


def test_a_second_writer_is_refused_and_the_first_is_untouched(bag, tiny_vla, tiny_model_dir,
                                                               unpruned_run, tmp_path, capsys):
    import threading

    from fastdrivevla_ros.cli import main

    out, first = tmp_path / "run", _Blocks(make_engine(tiny_vla))
    errors = []

    def first_writer():
        try:
            replay_bag(bag, first, out, limit=2, progress=False)
        except BaseException as e:     # noqa: B902 - reported by the assertion below
            errors.append(e)

    thread = threading.Thread(target=first_writer)
    thread.start()
    try:
        assert first.started.wait(120)
        with pytest.raises(ConfigError, match="being written by another replay"):
            replay_bag(bag, make_engine(tiny_vla), out, limit=2, progress=False)
        assert main(["replay", str(bag), "--model", str(tiny_model_dir), "--out", str(out),
                     "--max-pixels", "3136", "--max-new-tokens", "8", "--no-progress"]) == 2
        assert "being written by another replay" in capsys.readouterr().err
    finally:
        first.release.set()
        thread.join()
    assert not errors
    assert _plans(out) == _plans(unpruned_run[0])[:2]


def test_a_bag_cut_in_half_is_one_clear_line_and_leaves_no_folder(bag, tmp_path, capsys):
    import shutil

    from fastdrivevla_ros.cli import main

    cut = tmp_path / "cut"
    shutil.copytree(bag, cut)
    mcap = next(cut.glob("*.mcap"))
    with open(mcap, "r+b") as f:
        f.truncate(mcap.stat().st_size // 2)
    out = tmp_path / "out"
    args = ["replay", str(cut), "--ground-truth-as-prediction", "--out", str(out),
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(mcap) in err
    assert "truncated or corrupt" in err and "re-run `fastdrivevla convert`" in err
    assert not out.exists()
    assert main(args + ["--verbose"]) == 2
    assert "Traceback" in capsys.readouterr().err and not out.exists()


def test_a_full_disk_is_one_clear_line(bag, tmp_path, capsys):
    from fastdrivevla_ros.cli import main

    out = tmp_path / "full"
    out.mkdir()
    (out / "predictions.jsonl").symlink_to("/dev/full")     # every write: ENOSPC
    assert main(["replay", str(bag), "--ground-truth-as-prediction", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "No space left on device" in err and "predictions.jsonl" in err
    assert "free disk space" in err


def test_a_run_failing_before_its_first_prediction_leaves_no_folder(bag, tiny_vla, tmp_path):
    out = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt):
        replay_bag(bag, _DiesAfter(make_engine(tiny_vla), 1), out, progress=False)
    assert not out.exists()


def test_merge_refuses_shards_whose_manifests_differ(bag, tiny_vla, tmp_path):
    from fastdrivevla_ros.pruning.registry import build_pruner
    from fastdrivevla_ros.vla.engine import DrivingVLA, PlannerSettings

    a, b = tmp_path / "a", tmp_path / "b"
    replay_bag(bag, make_engine(tiny_vla), a, shard=(0, 2), progress=False)
    model, tok, proc = tiny_vla
    other = DrivingVLA(model, tok, proc, PlannerSettings(max_new_tokens=6, max_pixels=3136,
                                                         constrained=False),
                       build_pruner("none"))
    replay_bag(bag, other, b, shard=(1, 2), progress=False)
    with pytest.raises(DataError, match="not shards of one run .*settings.max_new_tokens: 8 != 6"):
        merge_runs(tmp_path / "m", [a, b])
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ reports (issue 14)
def _table(report: str) -> list[str]:
    """The rows of report.md's first (metrics) table."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Method"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


@pytest.fixture(scope="module")
def short_run(bag, tiny_vla, tmp_path_factory):
    out = tmp_path_factory.mktemp("short")
    replay_bag(bag, make_engine(tiny_vla, "random", 0.5), out, limit=2, progress=False)
    return out


def test_report_refuses_runs_over_different_samples_unless_intersect(unpruned_run, short_run,
                                                                     tmp_path, capsys):
    from fastdrivevla_ros.cli import main
    from fastdrivevla_ros.eval.report import compare

    base_dir = unpruned_run[0]
    with pytest.raises(DataError, match="different samples .*--intersect"):
        compare([short_run], tmp_path / "r", baseline=base_dir)
    assert main(["report", str(short_run), "--baseline", str(base_dir), "--out",
                 str(tmp_path / "r")]) == 2
    assert "different samples" in capsys.readouterr().err
    report = compare([short_run], tmp_path / "r", baseline=base_dir, intersect=True).read_text()
    assert "Scored on the 2 samples common to all 2 runs (--intersect)" in report
    assert "2 samples with a full 3 s future" in report
    rows = _table(report)
    base_row = next(r for r in rows if r.startswith("| unpruned |"))
    first_two = [r["metrics"]["l2"] for r in _lines(base_dir)[:2]]
    l2_1s = 100 * sum(sum(s[:2]) / 2 for s in first_two) / 2       # baseline on those 2 only
    assert base_row.split(" | ")[3] == f"{l2_1s:.2f}"


def test_report_lists_the_baseline_once_and_each_runs_own_latency(unpruned_run, bag, tiny_vla,
                                                                  tmp_path):
    from fastdrivevla_ros.eval.report import compare

    base_dir, base = unpruned_run
    other = tmp_path / "random"
    m = replay_bag(bag, make_engine(tiny_vla, "random", 0.5), other, progress=False)
    report = compare([base_dir, other], tmp_path / "r", baseline=base_dir).read_text()
    rows = _table(report)
    assert [r.split(" | ")[0] for r in rows] == ["| unpruned", "| random, 50% kept"]
    ms = [r.split(" | ")[2] for r in rows]
    assert ms == [f"{r['timings_ms_mean']['total']:.1f}" for r in (base, m)]
    latency = report.split("Mean stage latency (ms) per plan:")[1]
    assert latency.count("| unpruned |") == 1 and latency.count("| random, 50% kept |") == 1


def test_results_state_their_frame(unpruned_run):
    run_dir, metrics = unpruned_run
    assert metrics["frame"].startswith("ego frame")
    report = (run_dir / "report.md").read_text()
    assert "**ego frame of each keyframe" in report and "**LiDAR frame**" in report


def test_per_view_budgets_are_labelled_by_what_was_kept(bag, tiny_model_dir, tmp_path):
    from fastdrivevla_ros.cli import main

    out = tmp_path / "views"
    assert main(["replay", str(bag), "--model", str(tiny_model_dir), "--pruner", "random",
                 "--cameras", "CAM_FRONT", "CAM_BACK", "--view-ratios", "0.25", "0.75",
                 "--limit", "1", "--max-pixels", "3136", "--max-new-tokens", "2",
                 "--no-constrained", "--no-progress", "--out", str(out)]) == 0
    record = _lines(out)[0]
    assert record["tokens_kept"] == 4 + 1 and record["kept_fraction"] == round(5 / 12, 4)
    assert record["view_ratios"] == [0.25, 0.75]
    m = json.loads((out / "metrics.json").read_text())
    assert m["kept_fraction_mean"] == round(5 / 12, 4) and m["view_ratios"] == [0.25, 0.75]
    assert m["view_kept_fraction"] == {"CAM_FRONT": round(4 / 6, 4), "CAM_BACK": round(1 / 6, 4)}
    row = _table((out / "report.md").read_text())[0]
    assert row.startswith("| random, 42% kept (CAM_FRONT 67%, CAM_BACK 17%) |")


def test_the_budgets_yaml_is_a_config_its_pruner_applies_unless_a_flag_overrides(
        bag, tiny_model_dir, tmp_path):
    from fastdrivevla_ros.cli import main

    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("/**:\n  ros__parameters:\n    pruner: random\n    max_new_tokens: 3\n"
                       "    cameras: [CAM_FRONT, CAM_BACK]\n    view_ratios: [0.5, 0.5]\n")
    common = ["--model", str(tiny_model_dir), "--limit", "1", "--max-pixels", "3136",
              "--no-constrained", "--no-progress", "--budgets", str(budgets)]
    out = tmp_path / "yaml"
    assert main(["replay", str(bag), "--out", str(out), *common]) == 0
    manifest = json.loads((out / "shard.json").read_text())
    assert manifest["pruner"] == "random" and manifest["settings"]["max_new_tokens"] == 3
    assert manifest["settings"]["view_ratios"] == [0.5, 0.5]
    assert _lines(out)[0]["pruner"] == "random" and _lines(out)[0]["tokens_kept"] == 6
    flag = tmp_path / "flag"
    assert main(["replay", str(bag), "--out", str(flag), "--pruner", "none",
                 "--max-new-tokens", "2", *common]) == 0
    manifest = json.loads((flag / "shard.json").read_text())
    assert manifest["pruner"] == "none" and manifest["settings"]["max_new_tokens"] == 2


def test_previous_plan_drafts_follow_each_scene_and_leave_the_predictions_unchanged(
        bag, tiny_vla, tmp_path):
    runs = {}
    for draft in ("none", "kinematic", "previous"):
        engine = make_engine(tiny_vla)
        engine.configure(constrained=True, max_new_tokens=320, draft=draft)
        replay_bag(bag, engine, tmp_path / draft, progress=False)
        assert _plans(tmp_path / draft) == _plans(tmp_path / "none")
        runs[draft] = [(r["draft_tokens"], r["accepted_tokens"]) for r in _lines(tmp_path / draft)]
    assert all(d == a == 0 for d, a in runs["none"])
    assert all(0 <= a <= d for d, a in runs["previous"])
    assert runs["previous"][0] == runs["kinematic"][0]       # the first plan has no previous
    assert runs["previous"][1:] != runs["kinematic"][1:]     # later ones draft their previous
