"""The one interface every visual-token pruner implements, and budget arithmetic.

A pruner prunes at the INPUT of one or more LLM layers ("stages"): layer 0 means on the
post-merger visual tokens before the LLM (ReconPruner, DivPrune, VisPruner, ...); layer K >= 1
means inside the LLM after K layers have seen every token (FastV, T-FPS at K, SparseVLM's
several stages). At each stage the engine hands the pruner a `PruneContext` and the number of
tokens each view must keep; the pruner returns which original (raster) indices survive.
Kept tokens always keep their ORIGINAL 3D M-RoPE positions; the engine does that part.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, ClassVar

import torch

from fastdrivevla_ros.errors import ConfigError, InputError


@dataclass
class ViewTokens:
    """One view's still-alive visual tokens at a stage.

    camera: nuScenes channel name; grid: (rows, cols) of the full token grid;
    indices: [n] original raster indices (row * cols + col) still alive, sorted;
    features: [n, D] hidden states of those tokens at this stage's layer input
              (at layer 0 these are the merger outputs);
    embeddings: [n, D] the layer-0 (merger) embeddings of the same tokens;
    seq_positions: [n] where those tokens sit in the current LLM sequence;
    image: [rows*28, cols*28, 3] uint8 processor-resized image (numpy).
    """

    camera: str
    grid: tuple[int, int]
    indices: torch.Tensor
    features: torch.Tensor
    embeddings: torch.Tensor
    seq_positions: torch.Tensor
    image: Any = None

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class FrameExtras:
    """
    Per-frame side data for pruners, typed (the engine's `extras`).

    foreground_masks: {camera: HxW bool} (mask_oracle); stream, timestamp (s), scene: what
    VLA-Pruner keeps its history by; vision: what the pruner's vision_hooks yielded for this
    frame (set by the engine).
    """

    foreground_masks: dict | None = None
    stream: str = "default"
    timestamp: float | None = None
    scene: str | None = None
    vision: Any = None

    @classmethod
    def of(cls, extras: "FrameExtras | dict | None") -> "FrameExtras":
        """A new FrameExtras from the caller's dict or FrameExtras (which is never changed)."""
        if extras is None:
            return cls()
        if isinstance(extras, FrameExtras):
            return replace(extras)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(extras) - known)
        if unknown:
            raise InputError(f"unknown pruner extras {unknown}; known: {sorted(known)}")
        return cls(**extras)


@dataclass
class DecodeRecord:
    """
    What the engine hands `observe` after a plan (temporal pruners, e.g. VLA-Pruner).

    tokens: the reply's ids; forced: which of them the grammar fixed; passes: decode forwards;
    draft_tokens / accepted_tokens: draft tokens verified / kept;
    decode_inputs: {layer: [T, D] that layer's inputs over the decode steps (or None)} for the
    pruner's `record_decode_layers`; cache: the KV cache after decoding; sequence: the pruned
    prefill sequence (positions [3, L], kept raster indices per view); grids: per view (rows,
    cols); model: the VLA, to be read during `observe` and not kept.
    """

    tokens: list[int]
    forced: list[bool]
    passes: int
    decode_inputs: dict = field(default_factory=dict)
    draft_tokens: int = 0        # draft tokens verified (speculative decoding)
    accepted_tokens: int = 0     # of them, the ones the reply kept
    cache: Any = None
    sequence: Any = None
    grids: list = field(default_factory=list)
    cameras: tuple = ()
    extras: FrameExtras = field(default_factory=FrameExtras)
    model: Any = None
    tokenizer: Any = None        # for waypoint-token rows; None = every generated token


@dataclass
class PruneContext:
    """Everything a scorer may read at one stage.

    layer: LLM layer whose input is being pruned (0 = before the LLM);
    hidden: [L, D] current sequence hidden states (input of `layer`);
    position_ids: [3, L] the original M-RoPE positions of the current sequence;
    input_ids: [L] token ids of the current sequence (visual tokens are image-pad ids);
    attention: callable(query_positions [q]) -> [heads, q, L] softmax attention probabilities of
               layer `layer - 1` (causal, computed for just those rows so SDPA/Flash stay on);
               None at layer 0;
    model: the Qwen2_5_VLForConditionalGeneration (read it, do not keep it);
    extras: this frame's FrameExtras (masks, stream, timestamp, vision-hook output).
    """

    layer: int
    views: list[ViewTokens]
    hidden: torch.Tensor
    position_ids: torch.Tensor
    input_ids: torch.Tensor
    model: Any
    attention: Callable[[torch.Tensor], torch.Tensor] | None = None
    extras: FrameExtras = field(default_factory=FrameExtras)

    @property
    def text_positions(self) -> torch.Tensor:
        """[t] sequence positions of non-visual tokens."""
        visual = torch.zeros(len(self.input_ids), dtype=torch.bool, device=self.input_ids.device)
        for v in self.views:
            visual[v.seq_positions] = True
        return torch.nonzero(~visual).flatten()


@dataclass
class Selection:
    """kept: per view, sorted original raster indices to keep;
    scores: per view, saliency of the alive tokens in `ViewTokens.indices` order (or None)."""

    kept: list[torch.Tensor]
    scores: list[torch.Tensor | None]


class Pruner:
    """Base class. Subclasses set `name` and override `score` (top-K methods) or `select`."""

    name: ClassVar[str] = "base"
    #: LLM layers at whose input this pruner prunes, ascending. [0] = before the LLM.
    layers: tuple[int, ...] = (0,)
    #: True for the unpruned model: the engine then ignores the pruning ratio.
    keeps_all: ClassVar[bool] = False

    def score(self, ctx: PruneContext) -> list[torch.Tensor]:
        """Saliency per alive token of each view, [n_v] (higher = keep)."""
        raise NotImplementedError(f"pruner {self.name!r} implements neither score nor select")

    def select(self, ctx: PruneContext, budgets: list[int]) -> Selection:
        """Default: the top-`budget` tokens of `score` in each view."""
        scores = self.score(ctx)
        kept = [top_k_indices(s, v.indices, k) for s, v, k in zip(scores, ctx.views, budgets)]
        return Selection(kept, list(scores))

    def stage_budgets(self, final: list[int], totals: list[int]) -> list[list[int]]:
        """Budgets per stage (one list per entry of `layers`); the last equals `final`."""
        if len(self.layers) != 1:
            raise NotImplementedError(f"{self.name}: multi-stage pruners define stage_budgets")
        return [final]

    def fit(self, model) -> None:
        """Adapt to the VLA once, when the engine takes this pruner (e.g. scale layer indices
        to its depth). Keeps no reference to `model`. Default: nothing."""

    def vision_hooks(self, model) -> contextlib.AbstractContextManager:
        """Context manager wrapped around the vision encoder's forward; its value (if not None)
        becomes ctx.extras.vision. No other effect. Default: nothing."""
        return contextlib.nullcontext()

    #: LLM layers whose decode-step inputs the engine records for `observe` (VLA-Pruner).
    record_decode_layers: tuple[int, ...] = ()

    def observe(self, record: DecodeRecord) -> None:
        """Called after each plan with what the engine recorded (temporal methods). Default: no-op."""

    def reset(self) -> None:
        """Forget any per-stream state (new scene, time jump)."""


def top_k_indices(scores: torch.Tensor, indices: torch.Tensor, k: int) -> torch.Tensor:
    """The `k` entries of `indices` with the highest `scores`, sorted. Ties -> lower index
    (stable), so results are deterministic."""
    if k >= len(indices):
        return indices.clone()
    order = torch.sort(scores.float(), descending=True, stable=True).indices[:k]
    return torch.sort(indices[order]).values


def budget(num_tokens: int, ratio: float) -> int:
    """K = floor(N * (1 - p)); the epsilon keeps e.g. 100 * (1 - 0.3) = 69.999... at 70."""
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"pruning ratio must be in [0, 1), got {ratio}")
    return max(1, math.floor(num_tokens * (1.0 - ratio) + 1e-9))


def view_budgets(totals: list[int], ratio: float,
                 view_ratios: list[float] | None = None) -> list[int]:
    """Per-view budgets: one global ratio, or one ratio per view (Prune2Drive)."""
    if view_ratios is None:
        return [budget(n, ratio) for n in totals]
    if len(view_ratios) != len(totals):
        raise ConfigError(f"{len(view_ratios)} per-view ratios given for {len(totals)} views")
    return [budget(n, r) for n, r in zip(totals, view_ratios)]
