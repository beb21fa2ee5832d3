"""Every peer pruner, run by the engine on the tiny model under SDPA: exact budgets, valid
indices, 1 and 6 views, ratios 0.25/0.5/0.75, and ratio 0 keeping everything."""

from __future__ import annotations

import numpy as np
import pytest

from fastdrivevla_ros.pruning.base import view_budgets
from fastdrivevla_ros.pruning.registry import build_pruner
from fastdrivevla_ros.vla.prompt import CAMERAS

PEERS = ["fastv", "sparsevlm", "vispruner", "divprune", "tfps", "vla_pruner"]
VIEWS = {1: ("CAM_FRONT",), 6: CAMERAS}


@pytest.fixture
def small_images(camera_images):
    """The six frames at 267x150 (9x5 = 45 tokens each): budgets do not need 336 tokens."""
    return {c: np.ascontiguousarray(img[::6, ::6]) for c, img in camera_images.items()}


def _plan(engine, images, name, cameras, ratio, **options):
    pruner = build_pruner(name, **options)
    engine.pruner = pruner
    engine.configure(cameras=cameras, pruning_ratio=ratio, max_new_tokens=3)
    result = engine.plan({c: images[c] for c in cameras}, extras={"timestamp": 0.0})
    return pruner, result


def _expected_kept(pruner, totals, ratio):
    final = view_budgets(totals, ratio)
    return pruner.stage_budgets(final, totals)[-1]


# every method at every ratio with one view; with six views each method at one of the ratios
CASES = ([(name, 1, ratio) for name in PEERS for ratio in (0.25, 0.5, 0.75)]
         + [(name, 6, (0.25, 0.5, 0.75)[i % 3]) for i, name in enumerate(PEERS)])


@pytest.mark.parametrize("name,num_views,ratio", CASES)
def test_kept_tokens_match_budget_sorted_unique_in_range(engine, small_images, name,
                                                         num_views, ratio):
    assert engine.model.config.text_config._attn_implementation == "sdpa"
    pruner, result = _plan(engine, small_images, name, VIEWS[num_views], ratio)
    totals = [v.grid[0] * v.grid[1] for v in result.views]
    expected = _expected_kept(pruner, totals, ratio)
    if name != "sparsevlm":   # single stage: exactly floor(N (1 - p)) per view
        assert expected == view_budgets(totals, ratio)
    assert len(result.views) == num_views
    for view, k, n in zip(result.views, expected, totals):
        kept = np.asarray(view.kept)
        assert len(kept) == k < n
        assert np.all(np.diff(kept) > 0) and kept.min() >= 0 and kept.max() < n
    assert result.pruner == name and result.pruning_ratio == ratio


@pytest.mark.parametrize("name", PEERS)
def test_ratio_zero_keeps_every_token(engine, small_images, name):
    _, result = _plan(engine, small_images, name, VIEWS[6], 0.0)
    for view in result.views:
        assert np.array_equal(view.kept, np.arange(view.grid[0] * view.grid[1]))


def test_tfps_per_view_ratios_change_per_view_token_counts(engine, small_images):
    engine.pruner = build_pruner("tfps")
    ratios = (0.1, 0.5, 0.9, 0.0, 0.3, 0.7)
    engine.configure(cameras=CAMERAS, view_ratios=ratios, max_new_tokens=3)
    result = engine.plan(small_images)
    for view, r in zip(result.views, ratios):
        n = view.grid[0] * view.grid[1]
        assert len(view.kept) == max(1, int(np.floor(n * (1 - r) + 1e-9)))


def test_sparsevlm_fits_its_stages_to_the_model_depth(engine, small_images):
    pruner, _ = _plan(engine, small_images, "sparsevlm", VIEWS[1], 0.5)
    depth = engine.model.config.text_config.num_hidden_layers
    assert len(pruner.layers) == 3 and 0 < pruner.layers[0] < pruner.layers[-1] < depth
