"""Run the engine's decode loop and keep the logits of every lm_head call."""

from __future__ import annotations

import torch

from fastdrivevla_ros.vla.engine import _Stopwatch


def decode_with_logits(engine, inputs):
    """Return (tokens, decode record, logits of every lm_head call [calls, V], kept indices)."""
    seen = []
    handle = engine.model.lm_head.register_forward_hook(
        lambda mod, args, out: seen.append(out.detach().reshape(-1, out.shape[-1])[-1].clone()))
    try:
        tokens, seq, record = engine.generate_tokens(inputs, _Stopwatch(engine.device), {})
    finally:
        handle.remove()
    return tokens, record, torch.stack(seen), seq.alive
