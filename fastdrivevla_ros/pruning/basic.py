"""Reference pruners: keep everything, keep at random, keep by ground-truth foreground."""

from __future__ import annotations

import numpy as np
import torch

from fastdrivevla_ros.conventions import TOKEN_PX
from fastdrivevla_ros.errors import InputError, MissingInputError
from fastdrivevla_ros.pruning.base import PruneContext, Pruner



class NoPruner(Pruner):
    """Keeps every token (the unpruned model), whatever the ratio."""

    name = "none"
    keeps_all = True


class RandomPruner(Pruner):
    """Uniformly random tokens, drawn from `seed` afresh for every plan: a plan depends on its
    frame only, so the drive node, replays, shards and resumes all draw alike."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def score(self, ctx: PruneContext) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        return [torch.rand(len(v.indices), generator=generator) for v in ctx.views]


def token_foreground_fraction(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of foreground pixels under each token. mask: [H, W] bool/uint8 at ANY size;
    it is resized (nearest) to the token grid's pixel size first. Returns [rows*cols] float."""
    from PIL import Image

    rows, cols = grid
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"foreground mask must be 2-D, got shape {m.shape}")
    img = Image.fromarray((m > 0).astype(np.uint8) * 255)
    m = np.asarray(img.resize((cols * TOKEN_PX, rows * TOKEN_PX), Image.NEAREST)) > 0
    return m.reshape(rows, TOKEN_PX, cols, TOKEN_PX).mean(axis=(1, 3)).reshape(-1)


class MaskOraclePruner(Pruner):
    """Keeps tokens with the most foreground pixels (needs extras.foreground_masks)."""

    name = "mask_oracle"

    def score(self, ctx: PruneContext) -> list[torch.Tensor]:
        masks = ctx.extras.foreground_masks or {}
        out = []
        for v in ctx.views:
            if v.camera not in masks:
                raise MissingInputError(f"mask_oracle needs a foreground mask for {v.camera}")
            frac = torch.from_numpy(token_foreground_fraction(masks[v.camera], v.grid))
            out.append(frac[v.indices.cpu()].float())
        return out
