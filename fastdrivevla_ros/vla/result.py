"""What one planning call returns: computed once in the core, shown the same by every adapter."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class ViewResult:
    """One camera view's tokens.

    grid: (rows, cols) of LLM visual tokens (each covers 28x28 resized pixels);
    kept: sorted raster indices (row * cols + col) of the tokens fed to the LLM;
    scores: the pruner's saliency per token [rows*cols] (higher = keep), None if it has none;
    image: the processor-resized RGB image [rows*28, cols*28, 3] uint8 (for heatmaps).
    """

    camera: str
    grid: tuple[int, int]
    kept: np.ndarray
    scores: np.ndarray | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_kept(self) -> int:
        return int(len(self.kept))


@dataclass
class PlanResult:
    """waypoints: [6, 2] ego frame (x forward, y left, metres) at 0.5 s steps; all zeros with
    status 'parse_failed' when the reply did not parse (reason says why)."""

    waypoints: np.ndarray
    status: str                        # "ok" | "parse_failed"
    text: str
    views: list[ViewResult]
    pruner: str
    pruning_ratio: float
    timings_ms: dict[str, float]       # vision, scoring, prefill, decode, total
    reason: str = ""
    num_generated: int = 0             # reply tokens emitted (forced header included)
    decode_passes: int = 0             # forward passes after the prefill (header pass included)
    draft_tokens: int = 0              # draft tokens verified alongside (speculative decoding)
    accepted_tokens: int = 0           # of them, the ones the reply kept
    view_ratios: tuple[float, ...] | None = None   # per-view budgets, when they replaced the ratio

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def tokens_total(self) -> int:
        return sum(v.num_tokens for v in self.views)

    @property
    def tokens_kept(self) -> int:
        return sum(v.num_kept for v in self.views)

    @property
    def kept_fraction(self) -> float | None:
        """Share of the visual tokens the LLM saw: what a pruned run is labelled by."""
        return self.tokens_kept / self.tokens_total if self.tokens_total else None

    def to_json(self) -> dict:
        """A JSON-safe summary (no images): what predictions files and messages carry."""
        return {
            "waypoints": np.asarray(self.waypoints, dtype=float).round(4).tolist(),
            "status": self.status, "reason": self.reason, "text": self.text,
            "pruner": self.pruner, "pruning_ratio": self.pruning_ratio,
            "view_ratios": list(self.view_ratios) if self.view_ratios else None,
            "tokens_kept": self.tokens_kept, "tokens_total": self.tokens_total,
            "kept_fraction": None if self.kept_fraction is None else round(self.kept_fraction, 4),
            "num_generated": self.num_generated, "decode_passes": self.decode_passes,
            "draft_tokens": self.draft_tokens, "accepted_tokens": self.accepted_tokens,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "views": [{"camera": v.camera, "grid": list(v.grid), "kept": v.kept.tolist()}
                      for v in self.views],
        }


__all__ = ["PlanResult", "ViewResult", "asdict"]
