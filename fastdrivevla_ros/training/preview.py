"""What AFBR training is doing, as a picture: one row per image with

    image | ground-truth foreground | ReconPruner's top 50% (the kept tokens, saliency-tinted,
    as the node's heatmaps show them) | D(V_fore) | D(V_back)

so a person can see at a glance whether the scorer finds the foreground and whether the decoder
reconstructs what each branch gets. Written by the trainer at every checkpoint
(`OUT/previews/step-N.png`) for a fixed set of images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastdrivevla_ros.pruning.base import budget
from fastdrivevla_ros.viz.heatmap import label_tile, save_png, token_overlay
from fastdrivevla_ros.vla.result import ViewResult

COLUMNS = ("image", "foreground (GT)", "ReconPruner top 50%", "D(V_fore)", "D(V_back)")


def _rgb(x: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [0, 1] -> [H, W, 3] uint8 (grey for one channel)."""
    x = x.detach().float().clamp(0, 1).expand(3, -1, -1)
    return (x.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


@torch.no_grad()
def preview_rows(net, v: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                 grid: tuple[int, int], keys: list[str]) -> np.ndarray:
    """[B * H, 5 * W, 3] uint8 for the AFBR model `net` on one batch (see module doc)."""
    from fastdrivevla_ros.pruning.recon import grid_position_ids

    positions = grid_position_ids(grid, device=v.device)
    scores = net.forward_encoder(v, positions)
    recon = None
    if net.decoder is not None:
        fore, back, _ = net.forward_masking(v, scores)
        recon = net.forward_decoder(torch.cat([fore, back]), positions, grid).chunk(2)
    rows = []
    for i, key in enumerate(keys):
        s = scores[i].float().cpu().numpy()
        kept = np.sort(np.argsort(-s, kind="stable")[:budget(len(s), 0.5)])
        view = ViewResult(key, grid, kept, s, _rgb(image[i]))
        tiles = [_rgb(image[i]), _rgb(mask[i]), token_overlay(view)]
        blank = np.full_like(tiles[0], 64)
        tiles += [_rgb(r[i]) for r in recon] if recon else [blank, blank]
        labels = (f"{key[-40:]}",) + COLUMNS[1:]
        rows.append(np.concatenate([label_tile(t, text) for t, text in zip(tiles, labels)], axis=1))
    return np.concatenate(rows, axis=0)


def save_preview(net, v, image, mask, grid, keys, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    try:
        save_png(preview_rows(net, v, image, mask, grid, keys), path)
    finally:
        net.train(was_training)
    return path
