"""A short CPU training through `train-pruner` makes the saved ReconPruner keep the foreground:
on held-out images with a visually distinct foreground its top-50% tokens cover >= 90% of the
foreground tokens, where a random scorer covers about half. Run for the method (AFBR, with its
decoder warm-up) and for the paper's mask-prediction ablation.

The foreground objects have random hues and random checker textures, so their pixels cannot be
guessed from "this token is foreground" alone: reconstruction has to come from the tokens, which
is what makes the AFBR split informative (with one constant foreground colour an inverted split
can be reconstructed almost as well)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastdrivevla_ros.cli import main

SIZE = 168     # 6 x 6 tokens


def _make_images(root, n, seed):
    """Smooth gray background; 1-3 rectangles of a random saturated hue with a random checker
    texture are the foreground."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    (root / "masks" / "img").mkdir(parents=True)
    for i in range(n):
        low = rng.uniform(40, 200, (4, 4)).astype(np.float32)
        bg = np.asarray(Image.fromarray(low).resize((SIZE, SIZE), Image.BICUBIC))
        img = np.repeat(bg[..., None], 3, -1) + rng.normal(0, 6, (SIZE, SIZE, 3))
        mask = np.zeros((SIZE, SIZE), bool)
        for _ in range(rng.integers(1, 4)):
            w, h = rng.integers(SIZE // 5, int(SIZE // 2.5), 2)
            x0, y0 = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
            colour = rng.uniform(0, 255, 3)
            colour[rng.integers(3)] = rng.uniform(200, 255)
            colour[rng.integers(3)] = rng.uniform(0, 40)
            yy, xx = np.mgrid[0:h, 0:w]
            period = rng.integers(3, 9)
            checker = ((yy // period + xx // period) % 2)[..., None] * rng.uniform(-60, 60, 3)
            img[y0:y0 + h, x0:x0 + w] = colour + checker + rng.normal(0, 8, (h, w, 3))
            mask[y0:y0 + h, x0:x0 + w] = True
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "img" / f"{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / "img" / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("mode, steps", [("afbr", 250), ("mask_prediction", 300)])
def test_short_training_keeps_90_percent_of_heldout_foreground(mode, steps, tiny_model_dir,
                                                              tiny_vla, tmp_path, one_thread):
    from fastdrivevla_ros.pruning.recon import ReconPruner, grid_position_ids
    from fastdrivevla_ros.training.afbr import foreground_coverage, token_foreground
    from fastdrivevla_ros.training.data import (FrozenVision, ImageMaskDataset, collate,
                                                find_pairs)

    train = _make_images(tmp_path / "train", 64, seed=0)
    held = _make_images(tmp_path / "held", 24, seed=1)
    out = tmp_path / "recon"
    assert main(["train-pruner", "--model", str(tiny_model_dir), "--data", str(train),
                 "--out", str(out), "--mode", mode, "--max-steps", str(steps),
                 "--decoder-warmup-steps", "100", "--batch-size", "8", "--lr", "5e-4",
                 "--max-pixels", str(SIZE * SIZE), "--feature-cache", str(tmp_path / "cache"),
                 "--no-progress"]) == 0

    pruner = ReconPruner.from_pretrained(out).eval()
    model, _, processor = tiny_vla
    pairs, _ = find_pairs(held, [held / "masks"])
    batch = collate([ImageMaskDataset(pairs, processor, SIZE * SIZE)[i] for i in range(24)])
    with torch.no_grad():
        v = FrozenVision(model.model.visual)(batch, "cpu")
        scores = pruner(v, grid_position_ids((6, 6)))
    fg = token_foreground(batch["mask"]) > 0.5
    gen = torch.Generator().manual_seed(0)
    ours = np.nanmean([foreground_coverage(scores[i], fg[i]) for i in range(24)])
    rand = np.nanmean([foreground_coverage(torch.rand(36, generator=gen), fg[i])
                       for i in range(24)])
    assert ours >= 0.9, ours
    assert 0.3 < rand < 0.7, rand
