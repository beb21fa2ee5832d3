"""SparseVLM's Qwen adaptation: layer-averaged stage budgets, raters, rater-guided scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdrivevla_ros.pruning.base import PruneContext, ViewTokens, budget
from fastdrivevla_ros.pruning.sparsevlm import (SparseVLMPruner, layer_average_schedule,
                                                scaled_locations)


def test_locations_scale_to_the_3b_depth():
    assert scaled_locations(32) == (2, 6, 15)          # the official LLaVA-1.5 locations
    assert scaled_locations(36) == (2, 7, 17)
    assert SparseVLMPruner(depth=36).layers == (3, 8, 18)   # pruning at the next layer's input


@pytest.mark.parametrize("n", [45, 336, 3249])
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.75, 0.9])
def test_stage_budgets_average_over_layers_to_the_target(n, ratio):
    depth, starts = 36, (3, 8, 18)
    target = budget(n, ratio)
    b = layer_average_schedule(n, target, starts, depth)
    # the official cap topk(min(b, v_token_num - 1)): every stage drops at least one token
    assert n > b[0] > b[1] > b[2] >= 1 or b == [1, 1, 1]
    per_layer = [n] * starts[0] + [b[0]] * 5 + [b[1]] * 10 + [b[2]] * 18
    assert len(per_layer) == depth
    assert abs(np.mean(per_layer) - target) < 1.0


def _context(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    vocab = model.get_input_embeddings().num_embeddings
    n_text_before, n_vis, n_text_after = 3, 20, 9
    length = n_text_before + n_vis + n_text_after
    ids = torch.randint(0, vocab - 20, (length,), generator=g)
    emb = torch.randn(n_vis, model.config.text_config.hidden_size, generator=g)
    view = ViewTokens("CAM_FRONT", (4, 5), torch.arange(n_vis), emb, emb.clone(),
                      torch.arange(n_text_before, n_text_before + n_vis))
    logits = torch.randn(2, length, length, generator=g)
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)
    probs = torch.softmax(logits.masked_fill(causal, float("-inf")), dim=-1)
    ctx = PruneContext(layer=1, views=[view], hidden=torch.zeros(length, 4),
                       position_ids=torch.zeros(3, length, dtype=torch.long), input_ids=ids,
                       model=model, attention=lambda rows: probs[:, rows])
    return ctx, probs, emb, ids


def test_raters_and_scores_follow_the_official_recipe(tiny_vla):
    model = tiny_vla[0]
    ctx, probs, emb, ids = _context(model)
    pruner = SparseVLMPruner(depth=4)
    assert pruner.layers[0] == 1
    with torch.no_grad():
        sel = pruner.select(ctx, [7])
        words = model.get_input_embeddings()(ids[23:]).double().numpy()
    # raters: softmax over text of V T^T, mean over visual tokens, above the mean
    v = emb.double().numpy()
    m = v @ words.T
    p = np.exp(m - m.max(1, keepdims=True))
    relevance = (p / p.sum(1, keepdims=True)).mean(0)
    raters = [23 + i for i in range(len(relevance)) if relevance[i] > relevance.mean()]
    assert 0 < len(raters) < 9
    head_mean = probs.double().numpy().mean(0)
    score = np.array([np.mean([head_mean[r, 3 + j] for r in raters]) for j in range(20)])
    expected = sorted(np.argsort(-score, kind="stable")[:7].tolist())
    assert sel.kept[0].tolist() == expected
