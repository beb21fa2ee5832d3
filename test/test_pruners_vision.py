"""VisPruner's vision-side score: the attention each merged token receives in the last
full-attention ViT block, recovered through a hook although HF never returns those weights."""

from __future__ import annotations

import numpy as np
import torch

from fastdrivevla_ros.pruning.vispruner import VISION_KEY, vision_attention_hooks


def _numpy_received(x, cos, sin, block, sizes, unit=4):
    """Independent reference in raster (un-windowed) order, numpy float64: RMSNorm, qkv,
    2-D rotary, softmax(q k^T / sqrt(d)) per image and head, mean over heads and queries,
    then the mean of each 2x2 merge group."""
    attn = block.attn
    w = block.norm1.weight.detach().double().numpy()
    h = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + block.norm1.variance_epsilon) * w
    qkv = h @ attn.qkv.weight.detach().double().numpy().T + attn.qkv.bias.detach().double().numpy()
    s, heads = len(x), attn.num_heads
    q, k, _ = qkv.reshape(s, 3, heads, -1).transpose(1, 0, 2, 3)

    def rotate(t):
        half = t.shape[-1] // 2
        rot = np.concatenate([-t[..., half:], t[..., :half]], -1)
        return t * cos[:, None] + rot * sin[:, None]

    q, k = rotate(q), rotate(k)
    out, start = [], 0
    for n in sizes:
        qs, ks = q[start:start + n], k[start:start + n]
        received = np.zeros(n)
        for head in range(heads):
            logits = qs[:, head] @ ks[:, head].T / np.sqrt(qs.shape[-1])
            p = np.exp(logits - logits.max(1, keepdims=True))
            received += (p / p.sum(1, keepdims=True)).mean(0)
        out.append((received / heads).reshape(-1, unit).mean(1))
        start += n
    return out


def test_vision_attention_received_matches_direct_computation(engine, camera_images):
    from transformers.vision_utils import get_vision_window_index

    small = camera_images["CAM_BACK"][:600, :800].copy()       # a second, smaller grid
    engine.configure(cameras=("CAM_FRONT", "CAM_BACK"))
    inputs = engine.prepare({"CAM_FRONT": camera_images["CAM_FRONT"], "CAM_BACK": small})
    visual = engine.model.model.visual
    block = visual.blocks[visual.fullatt_block_indexes[-1]]
    seen = {}

    def grab(module, args, kwargs):
        seen["x"] = args[0].detach().double().numpy()
        seen["pe"] = [t.detach().double().numpy() for t in kwargs["position_embeddings"]]

    handle = block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad(), vision_attention_hooks(visual) as out:
            engine.model.model.get_image_features(inputs.pixel_values, inputs.image_grid_thw)
    finally:
        handle.remove()
    grid = inputs.image_grid_thw
    assert grid[0].tolist() != grid[1].tolist()
    window = get_vision_window_index(grid, visual.spatial_merge_size, visual.window_size,
                                     visual.patch_size)[0].numpy()
    unwindow = np.argsort(window)

    def raster(t):  # undo the window permutation of merge units
        return t.reshape(len(window), 4, -1)[unwindow].reshape(t.shape)

    x, (cos, sin) = raster(seen["x"]), [raster(t) for t in seen["pe"]]
    expected = _numpy_received(x, cos, sin, block, grid.prod(-1).tolist())
    got = out[VISION_KEY]
    assert [len(g) for g in got] == [r * c for r, c in inputs.grids]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-4, atol=1e-7)
        assert not np.allclose(e, e.mean())     # not trivially uniform: the order matters


def test_vision_hooks_are_removed_after_the_forward(engine, camera_images):
    visual = engine.model.model.visual
    block = visual.blocks[visual.fullatt_block_indexes[-1]]
    before = (len(visual._forward_pre_hooks), len(block._forward_pre_hooks))
    with vision_attention_hooks(visual):
        pass
    assert (len(visual._forward_pre_hooks), len(block._forward_pre_hooks)) == before
