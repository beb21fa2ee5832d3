"""VisPruner (Zhang et al., ICCV 2025): important tokens from vision attention + diverse tokens.

Official code (Theia-4869/VisPruner `llava_arch.py:encode_images`), per image with T kept:
  * T_imp = int(T * important_ratio) tokens with the highest vision-encoder attention;
  * the other T_div = T - T_imp come from the rest by iterative similarity removal on the
    normalised features: split the remaining tokens alternately into a / b, score every a-token
    by its max cosine similarity to b, drop the min(8, R - T_div) most similar a-tokens, keep
    the other a-tokens (in descending-score order) followed by b, and repeat until T_div remain.

Qwen2.5-VL has no [CLS] token; as VisPruner does for SigLIP we use the attention each token
RECEIVES in the last full-attention ViT block (mean over heads and queries). HF never returns
vision attention weights, so a forward pre-hook on that block recomputes softmax(QK^T / sqrt(d))
in query chunks from the block's input, per image (cu_seqlens); the window permutation is undone
(argsort of the window index) and each 2x2 patch group is averaged into its merged LLM token.
Similarity uses the merger outputs (the LLM-space tokens). Runs before the LLM (layer 0).

Tie-breaking: the official code sorts with `argsort(descending=True)`, which is NOT stable, so
the order of tied scores (equal attention, or a-tokens with equal max similarity) is up to the
backend and can differ between CPU and GPU. Both sorts here are stable (ties keep the earlier
token), so results are deterministic; they equal the official selection except where tied
scores straddle a cut, which no implementation can reproduce everywhere.
"""

from __future__ import annotations

import contextlib

import torch

from fastdrivevla_ros.errors import ConfigError, InputError
from fastdrivevla_ros.pruning.base import PruneContext, Pruner, Selection
from fastdrivevla_ros.pruning.similarity import unit_rows

VISION_KEY = "vispruner_attention"   # ctx.extras.vision[VISION_KEY]: per view [N_v]
DROP_PER_ROUND = 8                   # official: at most 8 a-tokens removed per round


def diverse_tokens(features: torch.Tensor, residual: torch.Tensor, keep: int) -> torch.Tensor:
    """VisPruner's diverse stage. features: [n, D]; residual: [R] local indices (in importance
    order, most important first); keep: T_div. Returns [T_div] local indices (unsorted).
    The residual tokens' cosine similarities are computed once ([R, R]) and looked up in
    every round instead of re-multiplied."""
    if len(residual) <= keep:
        return residual
    unit = unit_rows(features[residual])
    similarity_all = unit @ unit.T
    pos = torch.arange(len(residual), device=residual.device)    # positions in `residual`
    while True:
        drop = min(DROP_PER_ROUND, len(pos) - keep)
        if drop <= 0:
            return residual[pos]
        a, b = pos[::2], pos[1::2]
        if len(b):
            similarity = similarity_all[a[:, None], b[None, :]].max(dim=-1).values
        else:
            similarity = similarity_all.new_zeros(len(a))
        # stable, unlike the official argsort: deterministic ties (module docstring)
        distinct = torch.argsort(similarity, descending=True, stable=True)[drop:]
        pos = torch.cat([a[distinct], b])


def vispruner_select(attention: torch.Tensor, features: torch.Tensor, k: int,
                     important_ratio: float) -> torch.Tensor:
    """attention: [n] attention received; features: [n, D]; returns [k] local indices."""
    important = int(k * important_ratio)
    order = torch.argsort(attention.float(), descending=True, stable=True)   # stable: see above
    diverse = diverse_tokens(features, order[important:], k - important)
    return torch.cat([order[:important], diverse])


class VisPrunerPruner(Pruner):
    """Vision-attention-important + similarity-diverse tokens, before the LLM."""

    name = "vispruner"
    layers = (0,)

    def __init__(self, important_ratio: float = 0.5, chunk_elements: int = 1 << 25):
        if not 0.0 <= important_ratio <= 1.0:
            raise ConfigError("vispruner: important_ratio must be in [0, 1], "
                              f"got {important_ratio}")
        if chunk_elements < 1:
            raise ConfigError("vispruner: chunk_elements must be positive")
        self.important_ratio = float(important_ratio)
        self.chunk_elements = int(chunk_elements)

    def vision_hooks(self, model) -> contextlib.AbstractContextManager:
        return vision_attention_hooks(model.model.visual, self.chunk_elements)

    def select(self, ctx: PruneContext, budgets: list[int]) -> Selection:
        received = (ctx.extras.vision or {}).get(VISION_KEY)
        if received is None or len(received) != len(ctx.views):
            raise InputError("vispruner needs the vision encoder's attention; run it through "
                             "DrivingVLA (which installs vispruner's vision hooks)")
        kept, scores = [], []
        for view, att, k in zip(ctx.views, received, budgets):
            att = att.to(view.indices.device)[view.indices]
            local = vispruner_select(att, view.features, k, self.important_ratio)
            kept.append(torch.sort(view.indices[local]).values)
            scores.append(att)
        return Selection(kept, scores)


@contextlib.contextmanager
def vision_attention_hooks(visual, chunk_elements: int = 1 << 25):
    """Context manager over a Qwen2.5-VL vision tower's forward. Yields a dict whose
    VISION_KEY entry is filled, after the forward, with one [N_i] tensor per image: the
    attention each merged token receives in the last full-attention block (raster order).
    The block's own qkv projection output is reused (a forward hook on `attn.qkv`), so the
    overhead is the softmax(QK^T) pass alone."""
    block = visual.blocks[visual.fullatt_block_indexes[-1]]
    out: dict = {}
    state: dict = {}

    def capture_grid(module, args, kwargs):
        state["thw"] = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]

    def capture_block(module, args, kwargs):
        state["cu"] = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
        state["pe"] = kwargs.get("position_embeddings")

    def score_qkv(module, args, qkv):
        attn = block.attn
        received = attention_received(qkv, state["cu"], state["pe"], attn.num_heads,
                                      attn.scaling, chunk_elements)
        out[VISION_KEY] = merge_and_unpermute(visual, received, state["thw"])

    handles = [visual.register_forward_pre_hook(capture_grid, with_kwargs=True),
               block.register_forward_pre_hook(capture_block, with_kwargs=True),
               block.attn.qkv.register_forward_hook(score_qkv)]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def attention_received(qkv: torch.Tensor, cu_seqlens: torch.Tensor, position_embeddings,
                       heads: int, scaling: float, chunk_elements: int = 1 << 25) -> torch.Tensor:
    """qkv: [S, 3C] output of a full-attention ViT block's qkv projection (window-permuted
    patch order); cu_seqlens: [images + 1] image boundaries; position_embeddings: the block's
    (cos, sin). Returns [S]: the mean over heads and query patches of softmax(QK^T * scale)
    within the patch's own image, i.e. the attention each patch receives."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    s = qkv.shape[0]
    q, k, _ = qkv.reshape(s, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)          # [S, heads, d]
    received = torch.zeros(s, dtype=torch.float32, device=qkv.device)
    bounds = cu_seqlens.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        qs, ks = q[a:b].transpose(0, 1).float(), k[a:b].transpose(0, 1).float()   # [H, n, d]
        n = b - a
        rows = max(1, chunk_elements // (heads * n))
        total = torch.zeros(n, dtype=torch.float32, device=qkv.device)
        for r in range(0, n, rows):
            probs = torch.softmax(qs[:, r:r + rows] @ ks.transpose(1, 2) * scaling, dim=-1)
            total += probs.sum(dim=(0, 1))
        received[a:b] = total / (heads * n)
    return received


def merge_and_unpermute(visual, received: torch.Tensor,
                        grid_thw: torch.Tensor) -> list[torch.Tensor]:
    """[S] per-patch values in window order -> per image [t*h*w/4] per merged token, raster
    order: average each spatial-merge group, then undo the window permutation."""
    unit = visual.spatial_merge_size ** 2
    merged = received.view(-1, unit).mean(dim=1)
    window_index = _window_index(visual, grid_thw).to(merged.device)
    merged = merged[torch.argsort(window_index)]
    sizes = (grid_thw.prod(-1) // unit).tolist()
    return [m.cpu() for m in torch.split(merged, sizes)]


def _window_index(visual, grid_thw: torch.Tensor) -> torch.Tensor:
    """The vision tower's window permutation of merged-token units (transformers 4.57 / 5.x)."""
    if hasattr(visual, "get_window_index"):
        return visual.get_window_index(grid_thw)[0]
    from transformers.vision_utils import get_vision_window_index

    return get_vision_window_index(grid_thw, spatial_merge_size=visual.spatial_merge_size,
                                   window_size=visual.window_size,
                                   patch_size=visual.patch_size)[0]
