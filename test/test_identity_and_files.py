"""Results bound to what made them (issue 21): content identity of weights and bags, run
folders that describe exactly what they cover, and result files written whole or not at all."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch
from _bags import converted_bag

from fastdrivevla_ros.cli import main
from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.eval.replay import replay_bag, run_manifest
from fastdrivevla_ros.eval.run_folder import check_resumable, open_run_folder

KEYFRAMES = 6


@pytest.fixture(autouse=True)
def private_digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDRIVEVLA_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bag(scene_dir):
    return converted_bag(scene_dir, max_keyframes=KEYFRAMES)


def _engine(tiny_vla, pruner="none", ratio=0.0):
    from fastdrivevla_ros.pruning.registry import build_pruner
    from fastdrivevla_ros.vla.engine import DrivingVLA, PlannerSettings

    torch.set_num_threads(1)
    model, tok, proc = tiny_vla
    return DrivingVLA(model, tok, proc, PlannerSettings(max_new_tokens=4, max_pixels=3136,
                                                        pruning_ratio=ratio, constrained=False),
                      build_pruner(pruner))


def _snapshot(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _replace_content(path) -> None:
    """Other bytes at the same path, same size (what a re-downloaded checkpoint looks like)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ 1: weights by content
def test_a_checkpoint_replaced_at_the_same_path_is_refused_on_resume(bag, tiny_vla,
                                                                     tiny_model_dir, tmp_path):
    model, out = tmp_path / "model", tmp_path / "run"
    shutil.copytree(tiny_model_dir, model)
    replay_bag(bag, _engine(tiny_vla), out, limit=1, model=str(model), progress=False)
    replay_bag(bag, _engine(tiny_vla), out, limit=1, model=str(model), progress=False)  # same
    before = _snapshot(out)
    _replace_content(model / "model.safetensors")
    with pytest.raises(ConfigError, match=r"holds a different run .*identity\.model: '\w+' != "):
        replay_bag(bag, _engine(tiny_vla), out, limit=2, model=str(model), progress=False)
    assert _snapshot(out) == before


def test_pruner_weights_replaced_at_the_same_path_are_refused(bag, tmp_path):
    weights, out = tmp_path / "recon", tmp_path / "run"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"first weights")
    options = {"weights": str(weights)}

    def manifest():
        return run_manifest(bag, (0, 1), model="m", pruner="recon", keeps_all=False,
                            pruner_options=options)

    with open_run_folder(out, manifest()):
        pass
    check_resumable(out, manifest())                       # same content: resumes
    (weights / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(ConfigError, match=r"identity\.pruner_weights: '\w+' != '\w+'"):
        check_resumable(out, manifest())


def test_a_digest_is_read_once_per_path_size_and_mtime(tmp_path, monkeypatch):
    from fastdrivevla_ros import files

    reads = []
    real = files._sha256
    monkeypatch.setattr(files, "_sha256", lambda p: reads.append(p) or real(p))
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 100)
    first = files.file_digest(f)
    assert files.file_digest(f) == first and len(reads) == 1       # cached
    f.write_bytes(b"b" * 100)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert files.file_digest(f) != first and len(reads) == 2       # replaced: read again


# ------------------------------------------------------------------ 2: bags by content
def test_bags_converted_with_other_parameters_do_not_resume_into_each_other(scene_dir,
                                                                            tmp_path):
    from fastdrivevla_ros.data.nuscenes_bag import convert

    a = converted_bag(scene_dir, max_keyframes=2)
    b = tmp_path / "coarse" / a.name             # same name: metadata.yaml is identical
    b.parent.mkdir()
    convert(scene_dir, "v1.0-mini", b, scenes=["scene-0916"], max_keyframes=2,
            patch_res=1.0, progress=False)
    assert (a / "metadata.yaml").read_bytes() == (b / "metadata.yaml").read_bytes()
    out = tmp_path / "run"
    replay_bag(a, None, out, gt_as_prediction=True, progress=False)
    before = _snapshot(out)
    with pytest.raises(ConfigError, match="bag_id"):
        replay_bag(b, None, out, gt_as_prediction=True, progress=False)
    assert _snapshot(out) == before
    moved = tmp_path / "moved"                   # the same bag elsewhere is the same bag
    shutil.copytree(a, moved)
    replay_bag(moved, None, out, gt_as_prediction=True, progress=False)
    assert json.loads((b / "conversion.json").read_text())["patch_resolution_m"] == 1.0


# ------------------------------------------------------------------ 3: --limit of a folder
def test_a_shorter_limit_into_a_longer_run_scores_only_its_keyframes(bag, tmp_path, capsys):
    out = tmp_path / "gt"
    replay_bag(bag, None, out, gt_as_prediction=True, progress=False)
    assert main(["replay", str(bag), "--ground-truth-as-prediction", "--out", str(out),
                 "--limit", "4", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "resuming; 6 keyframes already done" in err
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "shard.json").read_text())
    assert metrics["frames"] == len(manifest["expected"]) == 4
    assert metrics["keyframes_in_shard"] == KEYFRAMES
    assert "Covers 4 of the 6 keyframes" in (out / "report.md").read_text()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6   # nothing lost


def test_search_budgets_into_a_folder_of_another_limit_is_refused(bag, tiny_vla,
                                                                  tiny_model_dir, tmp_path,
                                                                  capsys):
    from fastdrivevla_ros.eval.budget_search import search_budgets

    out = tmp_path / "search"
    engine = _engine(tiny_vla, "tfps", 0.5)
    search_budgets(bag, engine, out, trials=1, limit=1, progress=False, model=str(tiny_model_dir))
    before = _snapshot(out)
    code = main(["search-budgets", str(bag), "--model", str(tiny_model_dir), "--out", str(out),
                 "--trials", "1", "--limit", "2", "--cameras", "CAM_FRONT", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "limit: 1 != 2" in err
    assert _snapshot(out) == before


# ------------------------------------------------------------------ 5: report --out
def test_report_into_a_run_folder_is_refused(bag, tmp_path, capsys):
    run = tmp_path / "gt"
    replay_bag(bag, None, run, gt_as_prediction=True, progress=False)
    before = _snapshot(run)
    assert main(["report", str(run), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "is a replay run folder" in err
    assert _snapshot(run) == before


# ------------------------------------------------------------------ 6: atomic result files
def _full_disk(path, data=b"half"):
    with open(path, "wb") as f:
        f.write(data)
    raise OSError(errno.ENOSPC, "No space left on device")


def _write_report(out):
    from fastdrivevla_ros.eval.report import write_run_report

    metrics = {"convention": "uniad", "samples": 0, "l2_cm_per_step": [1.0] * 6}
    write_run_report(out, metrics)


def _fail_savefig(monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: _full_disk(path))


def _fail_text(monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))


@pytest.mark.parametrize("name,fail", [("report.md", _fail_text),
                                       ("l2_horizon.png", _fail_savefig)])
def test_a_full_disk_leaves_no_half_written_result(tmp_path, monkeypatch, name, fail):
    fail(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        _write_report(tmp_path)
    assert not (tmp_path / name).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp


def test_a_mask_cut_by_a_full_disk_is_not_left_for_the_next_run(scene_dir, tmp_path,
                                                               monkeypatch):
    import cv2

    monkeypatch.setattr(cv2, "imwrite", lambda path, img: _full_disk(path) or True)
    code = main(["foreground-masks", "--dataroot", str(scene_dir), "--version", "v1.0-mini",
                 "--cameras", "CAM_FRONT", "--every", "40", "--no-road", "--out",
                 str(tmp_path / "fg"), "--no-progress"])
    assert code == 2
    assert [p for p in (tmp_path / "fg").rglob("*.png")] == []


# ------------------------------------------------------------------ 7: smaller ones
def test_rel_is_undefined_when_both_scores_are_0():
    from fastdrivevla_ros.eval.report import relative

    assert relative(0.0, 0.0) is None and relative(2.0, 1.0) == 50.0


def test_an_empty_shard_reports_no_nan(bag, tmp_path, capsys):
    out = tmp_path / "empty"
    assert main(["replay", str(bag), "--ground-truth-as-prediction", "--out", str(out),
                 "--shard", "7/8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "0 samples" in printed and "nan" not in printed.lower()
    assert "nan" not in (out / "report.md").read_text().lower()


@pytest.mark.parametrize("argv,message", [
    (["--image", "CAM_FRONT={img}", "--image", "CAM_FRONT={img}"], "CAM_FRONT is given twice"),
    (["--image", "CAM_FRONT={img}", "--pruner", "none", "--pruning-ratio", "0.5"],
     "keeps every token, so --pruning-ratio 0.5 would be ignored"),
    (["--image", "CAM_FRONT={small}"], "smaller than one 28-px token"),
])
def test_plan_refuses_before_loading(tmp_path, capsys, argv, message):
    from PIL import Image

    img, small = tmp_path / "a.png", tmp_path / "small.png"
    Image.new("RGB", (64, 64)).save(img)
    Image.new("RGB", (20, 64)).save(small)
    argv = [a.format(img=img, small=small) for a in argv]
    # a model path that does not load: a refusal that waited for the load would say so
    model = tmp_path / "not-a-model"
    model.mkdir()
    assert main(["plan", "--model", str(model), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err


# ------------------------------------------------------------------ leftovers: SIGTERM, kill -9
def _cli(*argv):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "fastdrivevla_ros.cli", *map(str, argv)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _when(condition, proc, timeout=120):
    import time

    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.01)


def _sigterm_when(condition, proc) -> str:
    """SIGTERM `proc` once `condition()` holds; it must exit 143. Returns its stderr."""
    import signal

    try:
        _when(condition, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143
    finally:
        proc.kill()
        proc.wait()
    return proc.stderr.read()


def test_convert_stopped_by_sigterm_or_killed_leaves_no_partial_folder(scene_dir, tmp_path):
    out = tmp_path / "bag"
    stale = tmp_path / f".{out.name}.partial-{2 ** 22 + 12345}"     # a kill -9's leftover
    stale.mkdir()
    proc = _cli("convert", "--dataroot", scene_dir, "--version", "v1.0-mini", "--scenes",
                "scene-0916", "--max-keyframes", "2", "--out", out)
    stderr = _sigterm_when(lambda: any(tmp_path.glob(f".{out.name}.partial-{proc.pid}")), proc)
    assert "terminated" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []       # stale one removed too


def test_replay_stopped_by_sigterm_is_a_clean_interrupt(bag, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    proc = _cli("replay", bag, "--model", tiny_model_dir, "--out", out, "--max-pixels", "3136",
                "--max-new-tokens", "4", "--no-constrained", "--no-progress")
    assert "terminated (SIGTERM)" in _sigterm_when(lambda: (out / "shard.json").exists(), proc)
    # no manifest-only folder: either nothing, or predictions a rerun resumes from
    assert not out.exists() or (out / "predictions.jsonl").read_text().count("\n") >= 1
