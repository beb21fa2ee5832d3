"""Bad input is one line naming the file or the option, exit 2, before any model loads
(issue 21: each case below was an "internal error", a traceback, or came after the load)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest
import torch

from fastdrivevla_ros.cli import main


@pytest.fixture(autouse=True)
def nothing_loads(monkeypatch):
    """A refusal that waited for the model would end here, as an internal error (exit 1)."""
    from fastdrivevla_ros.vla import engine, loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(loading, "load_vla", refuse)
    monkeypatch.setattr(engine.DrivingVLA, "from_pretrained", refuse)


@pytest.fixture
def files(tmp_path, tiny_model_dir):
    """A copy of the tiny model, damaged copies of it, an image, a bad YAML, a file."""
    from PIL import Image

    def model_copy(name, damage=None):
        path = tmp_path / name
        shutil.copytree(tiny_model_dir, path)
        if damage:
            damage(path)
        return path

    def truncate(path):
        weights = path / "model.safetensors"
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size // 2)

    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    (tmp_path / "bad.yaml").write_text("/**:\n  ros__parameters:\n    pruner: [none\n")
    (tmp_path / "a_file").write_text("x")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"samples": 3, "conv')            # cut by a full disk
    (run / "predictions.jsonl").write_text("")
    return {"model": model_copy("model"), "img": tmp_path / "a.png",
            "truncated": model_copy("truncated", truncate),
            "no_tokenizer": model_copy("no_tok", lambda p: (p / "tokenizer.json").unlink()),
            "yaml": tmp_path / "bad.yaml", "file": tmp_path / "a_file", "run": run,
            "out": tmp_path / "out", "missing": tmp_path / "no_such_dir"}


PLAN = ["plan", "--model", "{model}", "--image", "CAM_FRONT={img}"]
CASES = [
    # typed pruner options, from each pruner's signature
    (PLAN + ["--pruner", "fastv", "--pruning-ratio", "0.5", "--pruner-options",
             '{"layer": "three"}'], "pruner 'fastv' option 'layer' must be int, got \"three\""),
    (PLAN + ["--pruner", "fastv", "--pruning-ratio", "0.5", "--pruner-options",
             '{"layer": true}'], "option 'layer' must be int, got true"),
    (PLAN + ["--pruner", "fastv", "--pruning-ratio", "0.5", "--pruner-options",
             '{"layer": 0}'], "fastv: layer K must be an integer >= 1"),
    (PLAN + ["--pruner", "sparsevlm", "--pruning-ratio", "0.5", "--pruner-options",
             '{"locations": [2, 6.5]}'], "option 'locations' must be tuple[int, ...]"),
    (PLAN + ["--pruner", "recon", "--pruning-ratio", "0.5", "--pruner-weights", "{missing}"],
     "--pruner-weights {missing}: no such file or directory"),
    # the runtime this torch can run
    (PLAN + ["--device", "cuda"], "--device cuda: this torch"),
    (PLAN + ["--attn-implementation", "flash_attention_2"], "needs the flash-attn package"),
    # the checkpoint, named
    (["plan", "--model", "{truncated}", "--image", "CAM_FRONT={img}"],
     "{truncated}/model.safetensors: truncated or corrupt"),
    (["plan", "--model", "{no_tokenizer}", "--image", "CAM_FRONT={img}"],
     "{no_tokenizer}: no tokenizer.json"),
    (["plan", "--model", "typo-model", "--image", "CAM_FRONT={img}"],
     "--model typo-model: no such checkpoint directory"),
    (["plan", "--model", "no-org/typo-model", "--image", "CAM_FRONT={img}"],
     "works offline by default (set HF_HUB_OFFLINE=0"),
    # files
    (PLAN + ["--config", "{yaml}"], "{yaml}:4:1: not valid YAML"),
    (PLAN + ["--out", "{file}"], "--out {file} is a file"),
    (["report", "{run}", "--out", "{out}"], "{run}/metrics.json: unreadable"),
    (["replay", "bag", "--model", "{model}", "--out", "{out}", "--bogus"],
     "unrecognized arguments: --bogus (see `fastdrivevla replay --help`)"),
    # search-budgets and bench arguments
    (["search-budgets", "bag", "--model", "{model}", "--out", "{out}", "--limit", "0"],
     "--limit must be >= 1, got 0"),
    (["bench", "--model", "{model}", "--out", "{out}", "--pruners", "fastv,nope"],
     "unknown pruner 'nope'"),
    (["bench", "--model", "{model}", "--out", "{out}", "--pruner-options",
      '{"fastv": {"layer": "x"}}'], "option 'layer' must be int"),
    (["bench", "--model", "{model}", "--out", "{out}", "--pruner-options",
      '{"fastvv": {"layer": 2}}'], "unknown pruner 'fastvv'"),
    (["bench", "--model", "{model}", "--out", "{out}", "--plan-ratios", "2"],
     "plan ratios must be in [0, 1)"),
    (["bench", "--model", "{model}", "--out", "{out}", "--scaling", "--scaling-points",
      "1:10x10"], "scaling point '1:10x10': 1 to 6 views of at least 28x28 px"),
    (["bench", "--model", "{model}", "--out", "{file}"], "--out {file} is a file"),
]


@pytest.mark.parametrize("argv,message", CASES, ids=[c[1][:40] for c in CASES])
def test_bad_input_is_one_line_and_exit_2_before_loading(files, capsys, argv, message):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if "flash_attention_2" in argv and importlib.util.find_spec("flash_attn"):
        pytest.skip("flash-attn is installed")
    def fill(text):
        for k, v in files.items():
            text = text.replace("{" + k + "}", str(v))
        return text

    try:
        code = main([fill(a) for a in argv])
    except SystemExit as e:            # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert fill(message) in err, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_out_is_refused_before_loading(files, capsys):
    ro = files["out"].parent / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["plan", "--model", str(files["model"]), "--image",
                     f"CAM_FRONT={files['img']}", "--out", str(ro / "x")]) == 2
    finally:
        ro.chmod(0o700)
    assert "is not writable" in capsys.readouterr().err


def test_a_metrics_file_that_is_not_a_runs_is_named(files, capsys):
    (files["run"] / "metrics.json").write_text(json.dumps([1, 2]))
    assert main(["report", str(files["run"]), "--out", str(files["out"])]) == 2
    assert "not the metrics.json of a replay run" in capsys.readouterr().err
