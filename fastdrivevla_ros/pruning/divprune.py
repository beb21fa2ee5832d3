"""DivPrune (Alvar et al., CVPR 2025): keep the most diverse visual tokens.

Official code (vbdi/divprune `llava_arch.py:DivPrune`): on the post-projector embeddings at the
LLM input, cosine distance 1 - cos, start from the token whose nearest neighbour is farthest,
then greedily add argmax_j min_{s in S} d(s, j). Here it runs per view on the merger outputs
(layer 0), with each view's own budget; kept tokens keep their original 3D M-RoPE positions as
in the MMTok Qwen port.
"""

from __future__ import annotations

import torch

from fastdrivevla_ros.pruning.base import PruneContext, Pruner, Selection
from fastdrivevla_ros.pruning.similarity import max_min_diverse


def diverse_selection(ctx: PruneContext, budgets: list[int]) -> Selection:
    """Max-min diverse tokens of each view's current features ([n_v, D]), k_v per view."""
    kept, scores = [], []
    for view, k in zip(ctx.views, budgets):
        if k >= len(view.indices):
            kept.append(view.indices.clone())
            scores.append(None)
            continue
        sel = max_min_diverse(view.features, k)
        kept.append(torch.sort(view.indices[sel.order]).values)
        scores.append(sel.scores())
    return Selection(kept, scores)


class DivPrunePruner(Pruner):
    """Max-min cosine diversity on the merger outputs, before the LLM."""

    name = "divprune"
    layers = (0,)

    def select(self, ctx: PruneContext, budgets: list[int]) -> Selection:
        return diverse_selection(ctx, budgets)
