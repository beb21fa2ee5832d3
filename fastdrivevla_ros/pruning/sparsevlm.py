"""SparseVLM (Zhang et al., ICML 2025): text-guided, training-free progressive pruning.

Official code (Gumpest/SparseVLMs `modelling_sparse_llama.py`, `score.py`):
  * raters: from the layer-0 embeddings, R = softmax_text(V T^T).mean(over visual tokens) over
    the text tokens that follow the image; the raters are the text tokens scoring above the mean;
  * at each pruning location l in [2, 6, 15] (of 32 layers) layer l's attention is averaged over
    heads and raters, and the top visual tokens survive into layer l + 1;
  * budgets per stage are a schedule whose average over ALL layers is the target, e.g.
    [300, 200, 110] of 576 tokens for "192 tokens" (`sparse_token_list_192`).

Qwen2.5-VL adaptation (no official port exists), documented here:
  * locations scaled to the model depth, round(l * depth / 32): [2, 7, 17] for the 36-layer 3B;
    the engine prunes at the INPUT of layer l + 1 using layer l's attention, computed for the
    rater rows only so SDPA/FlashAttention stay on;
  * per-stage budgets keep the official schedule's shape (300 : 200 : 110) but are RESCALED, per
    view, so that the number of visual tokens averaged over all decoder layers equals the
    view's target budget floor(N (1 - p)) (up to integer rounding, < 1 token); the official
    lists are fixed token counts for 576-token LLaVA images and do not transfer to other N;
  * the official cap applies: each stage keeps min(b, alive - 1) tokens
    (`topk(relation_vis, min(b, v_token_num - 1))`), so every stage prunes;
  * several views: raters are the text tokens after the last image and rate all views' tokens
    jointly; each view keeps its own per-stage budget.

This is a HYBRID of the official versions, stated here so results are not read as either one:
  * from v1.0 (main branch): the rater selection and the plain mean over all heads;
  * from v2.0: kept tokens keep their original 3D M-RoPE positions and pruned tokens are
    dropped (v1.0 re-indexes positions);
  * left out: v2.0's RoPE-bias correction of the scores and its top-14-head selection
    (`select_attn_head_by_sum`), v1.0's recycling (top-30% of the pruned tokens clustered by
    DPC-kNN and merged back), and the paper's rank-based adaptive deletion count (the released
    code, like this one, uses fixed per-stage lists).
"""

from __future__ import annotations

import math

import torch

from fastdrivevla_ros.errors import ConfigError, InputError
from fastdrivevla_ros.pruning.base import PruneContext, Pruner, Selection, top_k_indices

REFERENCE_DEPTH = 32               # LLaVA-1.5-7B (Vicuna) depth the official locations are for
PRUNING_LOCATIONS = (2, 6, 15)     # official `pruning_loc`
SCHEDULE_SHAPE = (300, 200, 110)   # official `sparse_token_list_192` (of 576 tokens)


def scale_layer(layer: int, depth: int, reference: int = REFERENCE_DEPTH) -> int:
    """A layer index of a `reference`-deep model mapped to a `depth`-deep one."""
    return int(round(layer * depth / reference))


def scaled_locations(depth: int, locations=PRUNING_LOCATIONS) -> tuple[int, ...]:
    """Scoring layers for a `depth`-layer LLM: scaled, strictly increasing, all < depth - 1."""
    if depth < len(locations) + 1:
        raise ConfigError(f"sparsevlm needs at least {len(locations) + 1} LLM layers, "
                          f"the model has {depth}")
    out: list[int] = []
    for i, loc in enumerate(locations):
        lo = out[-1] + 1 if out else 0
        hi = depth - 1 - (len(locations) - i)     # leave room for the later stages
        out.append(min(max(scale_layer(loc, depth), lo), hi))
    return tuple(out)


def layer_average_schedule(n: int, target: int, starts: tuple[int, ...], depth: int,
                           shape=SCHEDULE_SHAPE) -> list[int]:
    """Per-stage budgets b_s for stages starting at the engine layers `starts`, such that the
    visual-token count averaged over all `depth` layers, (starts[0] * n + sum_s span_s * b_s) /
    depth, equals `target` up to integer rounding. Each stage prunes at least one token, as the
    official `topk(..., min(b, v_token_num - 1))` does: b_0 <= n - 1 and b_s <= b_(s-1) - 1
    (then the average may fall short of a target within a few tokens of n); b_s >= 1."""
    if target >= n:
        return [n] * len(starts)
    spans = [b - a for a, b in zip(starts, (*starts[1:], depth))]
    weights = [s / shape[0] for s in shape[:len(starts)]]
    need = target * depth - starts[0] * n          # token-layers the pruned stages may use

    def used(c: float) -> float:
        return sum(span * min(n - 1 - s, c * w) for s, (span, w) in enumerate(zip(spans, weights)))

    lo, hi = 0.0, n / weights[-1]                  # used(hi) = every stage at its cap
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if used(mid) < need else (lo, mid)
    budgets, alive = [], n
    for w in weights:
        budgets.append(max(1, min(alive - 1, math.floor(lo * w))))
        alive = budgets[-1]
    deficit = need - sum(span * b for span, b in zip(spans, budgets))
    for s in reversed(range(len(budgets))):       # spend the rounding remainder, latest first
        cap = (budgets[s - 1] if s else n) - 1 - budgets[s]
        add = max(0, min(cap, deficit // spans[s]))
        budgets[s] += add
        deficit -= add * spans[s]
    return budgets


class SparseVLMPruner(Pruner):
    """Rater-guided top-k at three scaled depths with a layer-averaged budget schedule."""

    name = "sparsevlm"

    def __init__(self, depth: int = 36, locations: tuple[int, ...] = PRUNING_LOCATIONS):
        if len(locations) < 1 or len(locations) > len(SCHEDULE_SHAPE):
            raise ConfigError(f"sparsevlm: 1-{len(SCHEDULE_SHAPE)} pruning locations, "
                              f"got {locations}")
        self.locations = tuple(int(v) for v in locations)
        self._raters: torch.Tensor | None = None
        self.fit_depth(depth)

    def fit_depth(self, depth: int) -> None:
        """Scale the pruning locations to an LLM of `depth` layers (engine layers = loc + 1)."""
        self.depth = int(depth)
        self.layers = tuple(loc + 1 for loc in scaled_locations(self.depth, self.locations))

    def fit(self, model) -> None:
        self.fit_depth(model.config.text_config.num_hidden_layers)

    def stage_budgets(self, final: list[int], totals: list[int]) -> list[list[int]]:
        per_view = [layer_average_schedule(n, k, self.layers, self.depth)
                    for n, k in zip(totals, final)]
        return [list(stage) for stage in zip(*per_view)]

    def select(self, ctx: PruneContext, budgets: list[int]) -> Selection:
        if ctx.layer not in self.layers:
            raise InputError(f"sparsevlm prunes at layers {self.layers}, not {ctx.layer}")
        text = text_after_images(ctx)
        if ctx.layer == self.layers[0]:
            self._raters = find_raters(ctx, text)
        if self._raters is None or int(self._raters.max()) >= len(text):
            raise InputError("sparsevlm: raters were not chosen at the first stage of this frame")
        attn = ctx.attention(text[self._raters])            # [heads, R, L]
        relation = attn.mean(dim=0).mean(dim=0)              # heads, then raters -> [L]
        scores = [relation[v.seq_positions] for v in ctx.views]
        kept = [top_k_indices(s, v.indices, k) for s, v, k in zip(scores, ctx.views, budgets)]
        return Selection(kept, scores)


def text_after_images(ctx: PruneContext) -> torch.Tensor:
    """[T] current sequence positions of the text tokens after the last visual token."""
    last_visual = max(int(v.seq_positions.max()) for v in ctx.views if len(v.seq_positions))
    text = ctx.text_positions
    return text[text > last_visual]


def find_raters(ctx: PruneContext, text: torch.Tensor) -> torch.Tensor:
    """Indices into `text` of the rater tokens: softmax over text of V T^T (layer-0 embeddings
    of all visual tokens V [N, D] and of the text T [T, D]), averaged over visual tokens; the
    raters score above the mean (all text tokens if none does)."""
    if len(text) == 0:
        raise InputError("sparsevlm needs text after the images to choose raters")
    visual = torch.cat([v.embeddings for v in ctx.views]).float()
    words = ctx.model.get_input_embeddings()(ctx.input_ids[text]).float()
    relevance = torch.softmax(visual @ words.T, dim=1).mean(dim=0)    # [T]
    raters = torch.nonzero(relevance > relevance.mean()).flatten()
    return raters if len(raters) else torch.arange(len(text), device=text.device)
