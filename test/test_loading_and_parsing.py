"""Checkpoint loading is safe and symmetric; replies that do not parse never raise."""

import json
import shutil

import numpy as np
import pytest
import torch

from fastdrivevla_ros.errors import CheckpointError, InputError
from fastdrivevla_ros.vla.loading import load_vla
from fastdrivevla_ros.vla.parsing import parse_planning
from fastdrivevla_ros.vla.prompt import format_planning


def test_save_then_from_pretrained_round_trip_gives_identical_logits(tiny_vla, tmp_path):
    model, tokenizer, image_processor = tiny_vla
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    image_processor.save_pretrained(tmp_path)
    again, tok2, _ = load_vla(tmp_path)
    ids = tokenizer("<|im_start|>user\nhello", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)
    assert tok2.chat_template == tokenizer.chat_template


def test_pickle_only_checkpoint_is_refused(tiny_model_dir, tmp_path):
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle"):
        load_vla(tmp_path)


def test_remote_code_checkpoint_is_refused(tiny_model_dir, tmp_path):
    shutil.copytree(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.Model"}
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="remote code"):
        load_vla(tmp_path / "m")


def test_checkpoint_with_another_token_size_is_refused(tiny_model_dir, tmp_path):
    """Grids, heatmaps and masks assume 28 px per LLM token (patch 14 x merge 2)."""
    shutil.copytree(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["vision_config"]["patch_size"] = 16
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="covers 32 px"):
        load_vla(tmp_path / "m")


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vla(str(tmp_path / "nope"))


def test_tiny_model_has_qwen_special_tokens_in_their_roles(tiny_vla):
    model, tok, _ = tiny_vla
    ids = tok.convert_tokens_to_ids
    assert model.config.image_token_id == ids("<|image_pad|>")
    assert model.config.vision_start_token_id == ids("<|vision_start|>")
    assert tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}],
                                   tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_well_formed_reply_parses_to_ego_frame_waypoints():
    wp = np.array([[1.0, 0.1], [2.0, 0.2], [3.1, 0.3], [4.2, 0.4], [5.3, 0.5], [6.4, -0.6]])
    out, status, reason = parse_planning(format_planning(wp))
    assert status == "ok", reason
    np.testing.assert_allclose(out, wp)


@pytest.mark.parametrize("text", [
    "", "hello world", "<PLANNING>[1.0, 2.0]</PLANNING>",                       # short
    format_planning(np.ones((6, 2))).replace("</PLANNING>", ""),               # truncated
    format_planning(np.ones((7, 2))),                                          # long
    "<PLANNING>[x, y]: [a, b], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]</PLANNING>",
    format_planning(np.full((6, 2), 5000.0)),                                   # absurd
    "<PLANNING>[x, y]: [nan, 1], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]</PLANNING>",
])
def test_garbage_short_long_replies_are_parse_failed_not_exceptions(text):
    out, status, reason = parse_planning(text)
    assert status == "parse_failed" and reason
    assert out.shape == (6, 2) and not out.any()


@pytest.mark.parametrize("image", [np.zeros((900, 1600), np.uint8),
                                   np.zeros((900, 1600, 3), np.float32),
                                   np.zeros((10, 10, 3), np.uint8)])
def test_unusable_camera_images_raise_input_error(engine, image):
    with pytest.raises(InputError):
        engine.plan({"CAM_FRONT": image})


def test_missing_camera_raises_input_error(engine, camera_images):
    engine.configure(cameras=("CAM_FRONT", "CAM_BACK"))
    with pytest.raises(InputError, match="CAM_BACK"):
        engine.plan({"CAM_FRONT": camera_images["CAM_FRONT"]})


def test_chat_template_is_read_from_processor_chat_template_json(tiny_model_dir, tmp_path):
    """Hub Qwen2.5-VL checkpoints may ship the template only as chat_template.json."""
    model_dir = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model_dir)
    template = (model_dir / "chat_template.jinja").read_text()
    (model_dir / "chat_template.jinja").unlink()
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (model_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    (model_dir / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    _, tok, _ = load_vla(model_dir)
    assert tok.chat_template == template
