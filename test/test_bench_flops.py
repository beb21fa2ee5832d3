"""FLOP accounting of the benchmark: measured counts vs the analytic transformer formula."""

from __future__ import annotations

import pytest
import torch

from fastdrivevla_ros.bench.measure import synthetic_frames
from fastdrivevla_ros.bench.runner import count_stage_flops, fixed_decode_length


def analytic_prefill_flops(text_config, seq_len: int) -> dict:
    """Independent count from the config: 2 * (matmul params per layer) * L per layer, plus
    attention 2 * L * L * D for Q.K^T and as much for A.V (full L x L, as FlopCounterMode
    counts it), plus the LM head on the last position only."""
    d, f = text_config.hidden_size, text_config.intermediate_size
    head_dim = d // text_config.num_attention_heads
    kv = text_config.num_key_value_heads * head_dim
    layer_params = d * d + 2 * d * kv + d * d + 3 * d * f    # q, k, v, o, gate/up/down
    n = text_config.num_hidden_layers
    linear = 2 * layer_params * seq_len * n
    attention = 4 * seq_len * seq_len * d * n
    head = 2 * d * text_config.vocab_size
    return {"linear": linear, "attention": attention, "total": linear + attention + head}


@pytest.fixture(scope="module")
def small_engine(tiny_vla):
    """The 'small' preset (8 layers, width 512) built in memory with the tiny tokenizer."""
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from fastdrivevla_ros.vla.engine import DrivingVLA, PlannerSettings
    from fastdrivevla_ros.vla.tiny import build_config

    _, tokenizer, processor = tiny_vla
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(build_config(tokenizer, "small")).eval()
    model.generation_config = GenerationConfig(eos_token_id=model.config.eos_token_id,
                                               do_sample=False)
    return DrivingVLA(model, tokenizer, processor, PlannerSettings(max_new_tokens=2, constrained=False))


def _measured_vs_analytic(engine, image_size):
    engine.configure(image_size=image_size, max_new_tokens=2)
    frames = synthetic_frames(engine.settings.cameras, 640, 360)
    seq_len = int(engine.prepare(frames).input_ids.shape[1])
    with fixed_decode_length(engine):
        flops, _ = count_stage_flops(engine, frames)
    return flops, analytic_prefill_flops(engine.model.config.text_config, seq_len)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_ratio_zero_prefill_flops_match_analytic_count(preset, engine, small_engine):
    eng = engine if preset == "tiny" else small_engine
    flops, analytic = _measured_vs_analytic(eng, (392, 392))    # 14 x 14 = 196 visual tokens
    assert flops["prefill"] == pytest.approx(analytic["total"], rel=0.10)
    # the attention term is counted (CPU SDPA needs an explicit formula in FlopCounterMode)
    assert flops["prefill_attention"] == pytest.approx(analytic["attention"], rel=0.10)


def test_stage_flops_partition_the_whole_plan(engine):
    """Scoring runs between prefill layers; it must be counted once, as 'pruner'."""
    from fastdrivevla_ros.pruning.registry import build_pruner

    engine.pruner = build_pruner("random")
    engine.configure(image_size=(392, 392), pruning_ratio=0.5, max_new_tokens=3)
    frames = synthetic_frames(engine.settings.cameras, 640, 360)
    with fixed_decode_length(engine):
        flops, result = count_stage_flops(engine, frames)
    parts = flops["vision"] + flops["pruner"] + flops["prefill"] + flops["decode"] + flops["other"]
    assert parts == flops["total"]
    assert result.num_generated == 3                       # fixed decode length
    assert flops["decode_per_token"] == pytest.approx(flops["decode"] / 3)
    assert result.tokens_kept == 98                         # floor(196 * 0.5)


def test_pruned_prefill_counts_fewer_flops(engine):
    from fastdrivevla_ros.pruning.registry import build_pruner

    frames = synthetic_frames(engine.settings.cameras, 640, 360)
    engine.configure(image_size=(392, 392), max_new_tokens=1)
    engine.pruner = build_pruner("random")
    counts = {}
    with fixed_decode_length(engine):
        for ratio in (0.0, 0.75):
            engine.configure(pruning_ratio=ratio)
            counts[ratio], _ = count_stage_flops(engine, frames)
    assert counts[0.75]["prefill"] < 0.6 * counts[0.0]["prefill"]
    assert counts[0.75]["vision"] == counts[0.0]["vision"]   # pruning happens after the encoder
