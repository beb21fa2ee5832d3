"""Replay of a converted bag through the tiny model: outputs, resume, shards + merge, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from _bags import converted_bag

from fastdrivevla_ros.errors import ConfigError, DataError
from fastdrivevla_ros.eval.replay import merge_runs, replay_bag
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
                                                        pruning_ratio=ratio), pruner)


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
    with pytest.raises(DataError, match="disagree on pruner"):
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
                 "--baseline", str(unpruned_run[0])]) == 0
    assert (tmp_path / "cmp" / "metrics_vs_ratio.png").stat().st_size > 0
    assert "random, 25% kept" in (tmp_path / "cmp" / "report.md").read_text()
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
                 "--view-ratios", "0.5", *common]) == 2                 # one source only
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
