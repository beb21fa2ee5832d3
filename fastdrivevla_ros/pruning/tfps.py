"""Prune2Drive T-FPS (Xiong et al., CVPR 2026): token-wise farthest point sampling per view.

Official code (`modeling_llama.py:farway_point_sampling`): for each camera view separately,
farthest point sampling under the cosine distance, starting from the most isolated token,
on the hidden states at the input of LLM layer `fastv_k` (1 in `scripts/inference.py`), with
original positions kept. Each view keeps its own share: the per-view retention rates r_i come
from the engine's `view_ratios` (pruning ratio p_i = 1 - r_i), found offline by
`fastdrivevla search-budgets` (TPE, eval/budget_search.py). With one front camera T-FPS is
plain FPS. At layer 0 it equals DivPrune applied per view.
"""

from __future__ import annotations

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.pruning.base import PruneContext, Pruner, Selection
from fastdrivevla_ros.pruning.divprune import diverse_selection


class TFPSPruner(Pruner):
    """Per-view farthest point sampling (cosine) at the input of LLM layer `layer`."""

    name = "tfps"

    def __init__(self, layer: int = 1):
        if int(layer) != layer or layer < 0:
            raise ConfigError(f"tfps: layer must be a non-negative integer, got {layer!r}")
        self.layers = (int(layer),)

    def select(self, ctx: PruneContext, budgets: list[int]) -> Selection:
        return diverse_selection(ctx, budgets)
