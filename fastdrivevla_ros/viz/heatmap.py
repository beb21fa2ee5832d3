"""Retained-token heatmaps: per-view overlays on the resized image and a 2x3 camera mosaic.

Everything here returns RGB uint8 arrays; adapters convert (bgr8 for ROS, PNG for the CLI).
Kept tokens show the image tinted by saliency (or plain when the pruner has no scores);
pruned tokens are darkened, so "what the planner saw" reads at a glance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from fastdrivevla_ros.conventions import TOKEN_PX

if TYPE_CHECKING:   # viz sits below vla: it draws a ViewResult but never imports vla
    from fastdrivevla_ros.vla.result import ViewResult

MOSAIC_LAYOUT = (("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
                 ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"))   # as seen from above


def kept_mask(view: ViewResult) -> np.ndarray:
    """[rows, cols] bool: True where the token was fed to the LLM."""
    rows, cols = view.grid
    mask = np.zeros(rows * cols, dtype=bool)
    mask[np.asarray(view.kept, dtype=int)] = True
    return mask.reshape(rows, cols)


def _normalised_scores(view: ViewResult) -> np.ndarray | None:
    """[rows, cols] scores scaled to [0, 1] by rank (robust to any scale), NaN-free."""
    if view.scores is None:
        return None
    s = np.asarray(view.scores, dtype=float)
    finite = np.isfinite(s)
    if not finite.any():
        return None
    ranks = np.zeros_like(s)
    order = np.argsort(s[finite], kind="stable")
    ranks[np.flatnonzero(finite)[order]] = np.linspace(0.0, 1.0, finite.sum())
    return ranks.reshape(view.grid)


def _jet(x: np.ndarray) -> np.ndarray:
    """[..] in [0, 1] -> [.., 3] RGB in [0, 1] (matplotlib's 'jet' colormap)."""
    from matplotlib import colormaps

    return colormaps["jet"](x)[..., :3]


def token_overlay(view: ViewResult, alpha: float = 0.45, dim: float = 0.25) -> np.ndarray:
    """[rows*28, cols*28, 3] uint8: the resized image, saliency-tinted where tokens were kept
    and darkened (x `dim`) where they were pruned."""
    rows, cols = view.grid
    h, w = rows * TOKEN_PX, cols * TOKEN_PX
    image = view.image if view.image is not None else np.full((h, w, 3), 128, np.uint8)
    img = np.asarray(image, dtype=float) / 255.0
    if img.shape[:2] != (h, w):
        raise ValueError(f"{view.camera}: image {img.shape[:2]} does not match grid {view.grid}")
    up = lambda a: np.repeat(np.repeat(a, TOKEN_PX, 0), TOKEN_PX, 1)  # noqa: E731
    keep = up(kept_mask(view))[..., None]
    scores = _normalised_scores(view)
    tinted = img if scores is None else (1 - alpha) * img + alpha * up(_jet(scores))
    out = np.where(keep, tinted, img * dim)
    return (out * 255).round().astype(np.uint8)


def label_tile(tile: np.ndarray, text: str) -> np.ndarray:
    """The tile with `text` in white on a black box at its top left."""
    im = Image.fromarray(tile)
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, 0, 7 * len(text) + 8, 16], fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(im)


def mosaic(views: list[ViewResult], tile_size: tuple[int, int] = (336, 196)) -> np.ndarray:
    """2x3 six-camera mosaic [2*h, 3*w, 3] uint8 (front row on top, as seen from above);
    cameras not fed to the model are grey tiles labelled 'not used'."""
    w, h = tile_size
    by_camera = {v.camera: v for v in views}
    unknown = set(by_camera) - {cam for row in MOSAIC_LAYOUT for cam in row}
    if unknown:
        raise ValueError(f"unknown cameras in views: {sorted(unknown)}")
    rows = []
    for row in MOSAIC_LAYOUT:
        tiles = []
        for cam in row:
            if cam in by_camera:
                v = by_camera[cam]
                tile = np.asarray(Image.fromarray(token_overlay(v)).resize((w, h), Image.BILINEAR))
                text = f"{cam} {v.num_kept}/{v.num_tokens}"
            else:
                tile, text = np.full((h, w, 3), 64, np.uint8), f"{cam} not used"
            tiles.append(label_tile(tile, text))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


LEGEND_PX = 22
PRUNED_SWATCH = (32, 32, 32)


def with_legend(image: np.ndarray, scored: bool) -> np.ndarray:
    """`image` with a legend strip below it: what dark tiles and (when the pruner scores
    tokens) the colours mean. For files a person opens; ROS images stay legend-free."""
    h, w = image.shape[:2]
    strip = Image.new("RGB", (w, LEGEND_PX), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    draw.rectangle([4, 5, 16, 17], fill=PRUNED_SWATCH)
    draw.text((20, 5), "pruned", fill=(0, 0, 0))
    x = 70
    if scored:
        draw.text((x, 5), "kept, saliency low", fill=(0, 0, 0))
        x0 = x + 112
        bar = (_jet(np.linspace(0, 1, 80))[None].repeat(12, 0) * 255).astype(np.uint8)
        strip.paste(Image.fromarray(bar), (x0, 5))
        draw.text((x0 + 84, 5), "high", fill=(0, 0, 0))
    else:
        draw.text((x, 5), "kept (this pruner has no scores)", fill=(0, 0, 0))
    return np.concatenate([np.asarray(image, np.uint8), np.asarray(strip)], axis=0)


def save_png(array: np.ndarray, path) -> None:
    from fastdrivevla_ros.files import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(tmp, format="PNG")
