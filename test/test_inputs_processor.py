"""Preprocessing against transformers' own Qwen2VLImageProcessor (the independent reference).

The engine decodes JPEGs at a reduced DCT scale and resizes once, in threads, and normalises /
patchifies with torch; transformers' processor decodes fully and resizes with its own
smart_resize. Stated tolerance (normalised units, one grey level ~ 0.015): grids identical;
mean |pixel_values difference| < 0.015 (one grey level) and max < 0.6 (~40 levels, at sharp
edges, from one resize instead of two); with nothing to resize, < 1e-5 (float rounding).
"""

from __future__ import annotations

import io
import math

from _scene import require_scene
import numpy as np
from PIL import Image
import pytest
import torch

from fastdrivevla_ros.errors import InputError
from fastdrivevla_ros.vla.inputs import prepare_inputs, ProcessorGeometry, prepare_pixels
from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory

BUDGET = 512 * 512


def processor(**size):
    """transformers' image processor as a checkpoint's preprocessor_config.json would build it."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil)

    return Qwen2VLImageProcessorPil(patch_size=14, temporal_patch_size=2, merge_size=2, **size)


def scene_jpegs() -> dict[str, bytes]:
    samples = require_scene() / "samples"
    return {c: sorted((samples / c).glob("*.jpg"))[0].read_bytes() for c in CAMERAS}


def reference(proc, jpegs: dict, budget: int = BUDGET, **call):
    """Full decode, LLaMA-Factory's aspect-keeping shrink to `budget` pixels, then the
    processor's own smart_resize + resize + normalise + patchify."""
    images = []
    for data in jpegs.values():
        img = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = img.size
        if w * h > budget:
            f = math.sqrt(budget / (w * h))
            img = img.resize((int(w * f), int(h * f)), Image.BICUBIC)
        images.append(img)
    return proc(images=images, return_tensors="pt", **call)


def ours(proc, jpegs: dict, budget: int = BUDGET):
    frames, pixels, _ = prepare_pixels(list(jpegs.values()), list(jpegs), budget, None,
                                       ProcessorGeometry.of(proc))
    return frames, pixels


def grid_thw(frames) -> torch.Tensor:
    return torch.tensor([[1, f.shape[0] // 14, f.shape[1] // 14] for f in frames])


def test_six_real_jpegs_match_transformers_processor_within_tolerance(tiny_vla):
    """The tiny checkpoint's processor (Qwen2.5-VL's published bounds): grids 14x24 as before."""
    _, tok, proc = tiny_vla
    jpegs = scene_jpegs()
    ref = reference(proc, jpegs)
    inputs = prepare_inputs(tok, proc, list(CAMERAS), jpegs, EgoHistory.stationary(), BUDGET)
    assert torch.equal(inputs.image_grid_thw, ref["image_grid_thw"])
    assert inputs.grids == [(14, 24)] * 6
    d = (inputs.pixel_values - ref["pixel_values"]).abs()
    assert inputs.pixel_values.shape == ref["pixel_values"].shape
    assert float(d.mean()) < 0.015 and float(d.max()) < 0.6, (float(d.mean()), float(d.max()))


def test_pixel_values_are_the_processors_on_the_frames_the_heatmap_shows(tiny_vla):
    """inputs.resized (what ViewResult.image and the heatmaps draw on) IS the model input:
    the processor on those frames, without resizing, gives the same pixel_values."""
    _, tok, proc = tiny_vla
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 256, (450, 800, 3), dtype=np.uint8) for c in CAMERAS[:2]}
    images[CAMERAS[1]] = Image.fromarray(images[CAMERAS[1]])      # a PIL image too
    inputs = prepare_inputs(tok, proc, list(CAMERAS[:2]), images, EgoHistory.stationary(),
                            BUDGET)
    ref = proc(images=inputs.resized, do_resize=False, return_tensors="pt")
    assert torch.equal(inputs.image_grid_thw, ref["image_grid_thw"])
    torch.testing.assert_close(inputs.pixel_values, ref["pixel_values"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("size, budget, call", [
    # the checkpoint's max_pixels at the budget: 682x384 rounds to 672x392 > 262,144, shrinks
    ({"min_pixels": 3136, "max_pixels": BUDGET}, BUDGET, {}),
    # the checkpoint's min_pixels above the budget: the processor enlarges
    ({"min_pixels": 600_000, "max_pixels": 12_845_056}, BUDGET, {}),
    # a narrower checkpoint max_pixels than the user's budget: the user's setting wins, as a
    # call-time size does in transformers
    ({"min_pixels": 3136, "max_pixels": 50_000}, 100_000,
     {"size": {"shortest_edge": 3136, "longest_edge": 100_000}}),
])
def test_bounds_come_from_the_checkpoint_processor(size, budget, call):
    proc = processor(**size)
    jpegs = dict(list(scene_jpegs().items())[:2])
    ref = reference(proc, jpegs, budget, **call)
    frames, pixels = ours(proc, jpegs, budget)
    assert torch.equal(grid_thw(frames), ref["image_grid_thw"])
    assert float((pixels - ref["pixel_values"]).abs().mean()) < 0.015


def test_extreme_aspect_ratio_is_one_clear_input_error(tiny_vla):
    _, tok, proc = tiny_vla
    with pytest.raises(InputError, match="CAM_FRONT: image 6000x28 cannot be resized"):
        prepare_inputs(tok, proc, ["CAM_FRONT"], {"CAM_FRONT": np.zeros((28, 6000, 3), np.uint8)},
                       EgoHistory.stationary(), BUDGET)
