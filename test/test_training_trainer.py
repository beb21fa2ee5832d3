"""`fastdrivevla train-pruner` on the real scene's images + masks with the tiny model: the output
directory is a working `recon` pruner, the log has the loss terms, and a run killed mid-way
resumes from its last checkpoint at the same step and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fastdrivevla_ros.cli import main


@pytest.fixture(scope="module")
def scene_masks(scene_dir, tmp_path_factory):
    """Object masks (no map: fast) for CAM_FRONT of keyframes 0, 10, 20, 30, 40."""
    out = tmp_path_factory.mktemp("masks")
    assert main(["foreground-masks", "--dataroot", str(scene_dir), "--version", "v1.0-mini",
                 "--cameras", "CAM_FRONT", "--every", "10", "--no-road", "--out", str(out),
                 "--no-progress"]) == 0
    return out


def _args(model, data, masks, out, *extra) -> list[str]:
    # scene-0916 is in the official val split: training on it needs --allow-val
    return ["train-pruner", "--model", str(model), "--data", str(data), "--masks", str(masks),
            "--allow-val", "--out", str(out), "--max-pixels", str(128 * 128), "--batch-size", "2",
            "--decoder-layers", "2", "--lr", "1e-3", "--decoder-warmup-steps", "3",
            "--no-progress", *extra]



def test_two_steps_write_a_pruner_the_engine_uses_at_half_ratio(tiny_model_dir, tiny_vla,
                                                              scene_dir, scene_masks, tmp_path,
                                                              one_thread):
    from fastdrivevla_ros.pruning.registry import build_pruner
    from fastdrivevla_ros.vla.engine import DrivingVLA, PlannerSettings

    out = tmp_path / "recon"
    assert main(_args(tiny_model_dir, scene_dir, scene_masks, out, "--max-steps", "2",
                      "--log-every", "1", "--decoder-warmup-steps", "1", "--previews", "2")) == 0
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["decoder_warmup"] for r in rows] == [1.0, 0.0]     # decoder warm-up, then AFBR
    for key in ("loss", "loss_fore", "loss_back", "ssim_fore", "mse_back", "lr"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert "fg_fraction" not in rows[0] and 0 <= rows[1]["fg_fraction"] <= 1
    assert (out / "checkpoints" / "step-00000002" / "trainer_state.json").is_file()

    model, tok, proc = tiny_vla
    engine = DrivingVLA(model, tok, proc,
                        PlannerSettings(pruning_ratio=0.5, max_pixels=128 * 128, max_new_tokens=2,
                                        constrained=False),
                        pruner=build_pruner("recon", weights=str(out)))
    frame = sorted((scene_dir / "samples" / "CAM_FRONT").glob("*.jpg"))[0]
    result = engine.plan({"CAM_FRONT": np.asarray(Image.open(frame).convert("RGB"))})
    view = result.views[0]
    assert len(view.kept) == (view.grid[0] * view.grid[1]) // 2

    # the checkpoint's picture: 2 images x (image | mask | kept | D(V_fore) | D(V_back))
    rows, cols = view.grid
    preview = Image.open(out / "previews" / "step-00000002.png")
    assert preview.size == (5 * cols * 28, 2 * rows * 28)
    tiles = np.asarray(preview.convert("RGB")).reshape(2, rows * 28, 5, cols * 28, 3)
    assert tiles[:, 40:, 1].std() > 0 and tiles[:, 40:, 3].std() > 0   # below the labels


def _weights(out, step):
    from safetensors.torch import load_file

    return load_file(str(out / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))


def test_killed_run_resumes_at_its_last_checkpoint_and_matches_an_uninterrupted_run(
        tiny_model_dir, scene_dir, scene_masks, tmp_path, capsys, one_thread):
    total = "40"
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastdrivevla_ros.cli",
         *_args(tiny_model_dir, scene_dir, scene_masks, killed, "--max-steps", total,
                "--save-every", "1", "--keep-checkpoints", "2")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (killed / "checkpoints" / "step-00000002" / "trainer_state.json").is_file():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    done = sorted(int(p.name.split("-")[1]) for p in (killed / "checkpoints").glob("step-*")
                  if (p / "trainer_state.json").is_file())
    last = done[-1]
    assert 2 <= last < int(total)

    stop = str(last + 2)
    assert main(_args(tiny_model_dir, scene_dir, scene_masks, killed, "--max-steps", total,
                      "--until-step", stop)) == 0
    assert f"resumed from {killed / 'checkpoints' / f'step-{last:08d}'} at step {last}" in \
        capsys.readouterr().out
    state = json.loads((killed / "checkpoints" / f"step-{last + 2:08d}" / "trainer_state.json")
                       .read_text())
    assert state["step"] == last + 2

    fresh = tmp_path / "fresh"
    assert main(_args(tiny_model_dir, scene_dir, scene_masks, fresh, "--max-steps", total,
                      "--until-step", stop)) == 0
    a, b = _weights(killed, last + 2), _weights(fresh, last + 2)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)


def test_a_resume_with_other_settings_is_refused_and_a_stopped_run_looks_unfinished(
        tiny_model_dir, scene_dir, scene_masks, tmp_path, capsys, one_thread):
    out, model = tmp_path / "recon", tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    base = _args(model, scene_dir, scene_masks, out, "--max-steps", "3",
                 "--decoder-warmup-steps", "1", "--log-every", "1", "--previews", "0")
    assert main([*base, "--until-step", "1"]) == 0
    # stopped early: no final-looking pruner at the top, the step's own one in its checkpoint
    assert not (out / "model.safetensors").exists()
    assert (out / "checkpoints" / "step-00000001" / "pruner" / "model.safetensors").is_file()
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    capsys.readouterr()
    for flags, difference in [(["--seed", "1"], "seed: 0 != 1"),
                              (["--lr", "2e-3"], "lr: 0.001 != 0.002"),
                              (["--batch-size", "1"], "batch_size: 2 != 1"),
                              (["--mode", "mask_prediction"], "mode: 'afbr' != 'mask_prediction'")]:
        assert main([*base, *flags]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and difference in err, err
        assert len(err) < 400, err                      # the differences, not a key dump
    weights = model / "model.safetensors"               # same path, other weights
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    assert main(base) == 2
    assert "model_identity: '" in capsys.readouterr().err
    weights.write_bytes(original)
    cut = tmp_path / "cut"                              # a checkpoint cut by a full disk
    shutil.copytree(out, cut)
    state = cut / "checkpoints" / "step-00000001" / "model.safetensors"
    with open(state, "r+b") as f:
        f.truncate(state.stat().st_size // 2)
    assert main([str(cut) if a == str(out) else a for a in map(str, base)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{state}: truncated or corrupt" in err, err
    assert before == {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    # killed after logging step 2 but before its checkpoint: the redone step is logged once
    with open(out / "train_log.jsonl", "a") as f:
        f.write(json.dumps({"step": 2, "loss": 1.0}) + "\n")
    assert main(base) == 0
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (out / "model.safetensors").is_file()        # finished: now it is final
