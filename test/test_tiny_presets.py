"""make-tiny-model --preset 3b: Qwen2.5-VL-3B-Instruct's published shapes, built on the target
device in its dtype. Checked on the meta device: no 3B weights are ever allocated here."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastdrivevla_ros.vla.tiny import build_config, build_on_device, build_tokenizer

# Qwen/Qwen2.5-VL-3B-Instruct config.json (hub) and its model card's 3.75 B parameters
PUBLISHED = {
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                   out_hidden_size=2048, fullatt_block_indexes=[7, 15, 23, 31], window_size=112,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                   tokens_per_second=2),
    "text": dict(num_hidden_layers=36, hidden_size=2048, intermediate_size=11008,
                 num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
                 max_position_embeddings=128000),
}
PARAMETERS = 3_754_622_976


class _Allocations(TorchDispatchMode):
    """Every tensor any op produces: (dtype, number of elements)."""

    def __init__(self):
        super().__init__()
        self.made = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.made.append((t.dtype, t.numel()))
        return out


@pytest.fixture(scope="module")
def config_3b():
    return build_config(build_tokenizer(), "3b")


def test_3b_preset_has_the_published_shapes(config_3b):
    vision, text = config_3b.vision_config, config_3b.text_config
    for key, value in PUBLISHED["vision"].items():
        assert getattr(vision, key) == value, key
    for key, value in PUBLISHED["text"].items():
        assert getattr(text, key) == value, key
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert text.rope_parameters["rope_theta"] == 1_000_000.0
    assert config_3b.tie_word_embeddings and text.tie_word_embeddings


def test_3b_builds_in_bfloat16_on_the_device_without_a_float32_copy(config_3b):
    """On the meta device (shapes only): 3.75 B parameters, all bfloat16, the head tied to the
    embedding, and no float32 tensor larger than a rotary table is ever created."""
    with _Allocations() as seen:
        model = build_on_device(config_3b, 0, "meta", "bfloat16")
    params = list(model.parameters())
    assert sum(p.numel() for p in params) == PARAMETERS
    assert {p.dtype for p in params} == {torch.bfloat16}
    assert {p.device.type for p in params} == {"meta"}
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    big_fp32 = [n for dtype, n in seen.made if dtype == torch.float32 and n > 1 << 16]
    assert not big_fp32, f"float32 tensors of {big_fp32[:5]} elements were created"
