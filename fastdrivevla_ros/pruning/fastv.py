"""FastV (Chen et al., ECCV 2024): drop the visual tokens the last prompt token ignores.

Official code (pkunlp-icler/FastV `modeling_llama.py`): at LLM layer K (default 2) take layer
K-1's attention, average over heads, read the LAST prompt token's row over the image columns
and keep the top tokens; positions of kept tokens stay as they were. The engine computes that
single attention row directly from layer K-1's weights (`PruneContext.attention`), so the model
itself stays on SDPA / FlashAttention. With several views each view keeps its own top-k_v.
"""

from __future__ import annotations

import torch

from fastdrivevla_ros.errors import ConfigError, InputError
from fastdrivevla_ros.pruning.base import PruneContext, Pruner


def last_token_attention(ctx: PruneContext) -> torch.Tensor:
    """[L] head-mean attention of the last sequence position (layer K-1) over the sequence."""
    if ctx.attention is None:
        raise InputError(f"attention scores need an LLM layer K >= 1, got layer {ctx.layer}")
    last = torch.tensor([len(ctx.input_ids) - 1], device=ctx.hidden.device)
    return ctx.attention(last).mean(dim=0)[0]


class FastVPruner(Pruner):
    """Top-k visual tokens by the last prompt token's head-mean attention at layer K-1."""

    name = "fastv"

    def __init__(self, layer: int = 2):
        if int(layer) != layer or layer < 1:
            raise ConfigError(f"fastv: layer K must be an integer >= 1, got {layer!r}")
        self.layers = (int(layer),)

    def score(self, ctx: PruneContext) -> list[torch.Tensor]:
        row = last_token_attention(ctx)
        return [row[v.seq_positions] for v in ctx.views]
