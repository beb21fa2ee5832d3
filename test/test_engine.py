"""The engine is transformers' Qwen2.5-VL unpruned, and keeps original M-RoPE positions pruned."""

import math

import pytest
import torch

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.pruning.base import Pruner, Selection
from fastdrivevla_ros.pruning.registry import build_pruner
from fastdrivevla_ros.vla.engine import PlannerSettings, _Sequence, _Stopwatch
from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory, EgoState

HISTORY = EgoHistory([EgoState(-2.0, 0.1, 4.0, (0.2, 0.0), 0.01), EgoState(0.0, 0.0, 4.1)])


def _capture_positions(engine):
    """Record every position_ids tensor the decoder's rotary embedding receives."""
    seen = []
    handle = engine.rotary.register_forward_hook(
        lambda mod, args, out: seen.append(args[1].detach().clone()))
    return seen, handle


def test_ratio_zero_first_step_logits_match_transformers_forward(engine, camera_images):
    images = {c: camera_images[c] for c in ("CAM_FRONT", "CAM_BACK")}
    engine.configure(cameras=tuple(images))
    inputs = engine.prepare(images, HISTORY)
    with torch.no_grad():
        ref = engine.model(**inputs.generate_kwargs()).logits[0, -1]
        ours = _prefill_logits(engine, inputs, stages={})
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def _prefill_logits(engine, inputs, stages):
    extras = {}
    features = engine.encode_images(inputs, extras)
    ids = inputs.input_ids[0]
    embeds = engine.embed(ids)
    slots = torch.nonzero(inputs.mm_token_type_ids[0] == 1).flatten()
    embeds[slots] = torch.cat(features)
    totals = [f.shape[0] for f in features]
    offsets = [int(slots[sum(totals[:i])]) for i in range(len(totals))]
    seq = _Sequence(embeds, engine.rope_positions(inputs), torch.arange(len(ids)),
                    [torch.arange(n) for n in totals], offsets)
    hidden = engine.prefill(seq, stages, engine._new_cache(), _Stopwatch(engine.device), ids,
                            embeds, inputs, extras)
    return engine.model.lm_head(hidden)[0]


class _KeepAllAtLayer(Pruner):
    name = "keep_all_at_layer"

    def __init__(self, layer):
        self.layers = (layer,)

    def select(self, ctx, budgets):
        return Selection([v.indices.clone() for v in ctx.views], [None] * len(ctx.views))


@pytest.mark.parametrize("layer", [1, 2])
def test_pruning_at_layer_k_with_nothing_pruned_equals_unpruned(engine, camera_images, layer):
    """
    Keep every token on the layer-K path: nothing changes.

    The path keeps the full KV cache before K and rebuilds rotary embeddings and mask after.
    """
    engine.pruner = _KeepAllAtLayer(layer)
    inputs = engine.prepare({"CAM_FRONT": camera_images["CAM_FRONT"]}, HISTORY)
    totals = [r * c for r, c in inputs.grids]
    with torch.no_grad():
        ref = engine.model(**inputs.generate_kwargs()).logits[0, -1]
        ours = _prefill_logits(engine, inputs, stages={layer: totals})
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_kept_tokens_keep_transformers_rope_positions_and_decode_continues(engine,
                                                                          camera_images):
    engine.pruner = build_pruner("random", seed=3)
    engine.configure(pruning_ratio=0.5, cameras=("CAM_FRONT", "CAM_FRONT_LEFT"))
    images = {c: camera_images[c] for c in engine.settings.cameras}
    inputs = engine.prepare(images, HISTORY)
    full, _ = engine.model.model.get_rope_index(
        inputs.input_ids, mm_token_type_ids=inputs.mm_token_type_ids,
        image_grid_thw=inputs.image_grid_thw, attention_mask=inputs.attention_mask)
    seen, handle = _capture_positions(engine)
    try:
        tokens, seq, _ = engine.generate_tokens(inputs, _Stopwatch(engine.device), {})
    finally:
        handle.remove()
    prefill_positions = seen[0][:, 0]
    assert torch.equal(prefill_positions, full[:, 0, seq.alive])
    for t, pos in enumerate(seen[1:]):
        assert pos.flatten().tolist() == [int(full.max()) + 1 + t] * 3
    assert len(seen) - 1 == len(tokens) - 1  # one decode forward per token after the first


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.3])
def test_kept_per_view_is_floor_n_times_one_minus_ratio(engine, camera_images, ratio):
    engine.pruner = build_pruner("random")
    engine.configure(pruning_ratio=ratio, cameras=CAMERAS, max_new_tokens=2)
    result = engine.plan(camera_images, HISTORY)
    assert len(result.views) == 6
    for view in result.views:
        assert view.num_kept == math.floor(view.num_tokens * (1 - ratio) + 1e-9)
        assert list(view.kept) == sorted(set(view.kept.tolist()))
        assert 0 <= view.kept.min() and view.kept.max() < view.num_tokens


def test_each_view_keeps_its_own_grid(engine, camera_images):
    wide = camera_images["CAM_FRONT"]
    tall = camera_images["CAM_BACK"][:, :500]
    engine.configure(cameras=("CAM_FRONT", "CAM_BACK"), max_new_tokens=2)
    result = engine.plan({"CAM_FRONT": wide, "CAM_BACK": tall}, HISTORY)
    grids = [v.grid for v in result.views]
    assert grids[0] != grids[1]
    assert all(v.image.shape == (v.grid[0] * 28, v.grid[1] * 28, 3) for v in result.views)


def test_paper_resolution_gives_3249_tokens(engine, camera_images):
    engine.configure(image_size=(1596, 1596))
    inputs = engine.prepare({"CAM_FRONT": camera_images["CAM_FRONT"]})
    assert inputs.grids == [(57, 57)]


def test_impromptu_resolution_gives_336_tokens_for_a_nuscenes_frame(engine, camera_images):
    inputs = engine.prepare({"CAM_FRONT": camera_images["CAM_FRONT"]})
    assert inputs.grids == [(14, 24)]


def test_plan_result_reports_stage_timings_and_token_counts(engine, camera_images):
    engine.pruner = build_pruner("random")
    engine.configure(pruning_ratio=0.5)
    result = engine.plan({"CAM_FRONT": camera_images["CAM_FRONT"]}, HISTORY)
    assert {"vision", "scoring", "prefill", "decode", "total"} <= set(result.timings_ms)
    assert result.tokens_kept == 168 and result.tokens_total == 336
    assert result.to_json()["views"][0]["grid"] == [14, 24]


def test_constrained_decoding_always_yields_six_waypoints(engine, camera_images):
    engine.configure(constrained=True, max_new_tokens=400)
    for cam, ratio in [("CAM_FRONT", 0.0), ("CAM_BACK", 0.5), ("CAM_FRONT_LEFT", 0.75)]:
        engine.pruner = build_pruner("random" if ratio else "none")
        engine.configure(cameras=(cam,), pruning_ratio=ratio)
        result = engine.plan({cam: camera_images[cam]}, HISTORY)
        assert result.status == "ok", (result.reason, result.text)
        assert result.waypoints.shape == (6, 2)


def test_mask_oracle_keeps_the_foreground_tokens(engine, camera_images):
    import numpy as np

    mask = np.zeros((900, 1600), bool)
    mask[:, :800] = True                       # left half is "foreground"
    engine.pruner = build_pruner("mask_oracle")
    engine.configure(pruning_ratio=0.5, max_new_tokens=2)
    result = engine.plan({"CAM_FRONT": camera_images["CAM_FRONT"]}, HISTORY,
                         extras={"foreground_masks": {"CAM_FRONT": mask}})
    rows, cols = result.views[0].grid
    kept_cols = result.views[0].kept % cols
    assert (kept_cols < cols // 2).all()


@pytest.mark.parametrize("bad", [dict(pruning_ratio=1.0), dict(pruning_ratio=-0.1),
                                 dict(cameras=("CAM_TOP",)), dict(cameras=()),
                                 dict(max_pixels=10), dict(view_ratios=(0.5,), cameras=CAMERAS),
                                 dict(image_size=(10, 10))])
def test_bad_settings_are_rejected_with_a_config_error(bad):
    with pytest.raises(ConfigError):
        PlannerSettings(**bad)


def test_unknown_pruner_is_a_config_error():
    with pytest.raises(ConfigError, match="available"):
        build_pruner("no_such_pruner")


def test_jpeg_bytes_give_the_same_model_inputs_as_decoded_arrays(engine, camera_images):
    """
    Decode JPEGs handed over undecoded at a reduced DCT scale (PIL draft mode).

    Same token grids and prompt as the decoded arrays, pixels within a grey level on average.
    """
    import io

    import numpy as np
    from PIL import Image

    from fastdrivevla_ros.errors import InputError

    engine.configure(cameras=("CAM_FRONT", "CAM_BACK"))
    jpegs, arrays = {}, {}
    for cam in engine.settings.cameras:
        buf = io.BytesIO()
        Image.fromarray(camera_images[cam]).save(buf, "JPEG", quality=90)
        jpegs[cam] = buf.getvalue()
        arrays[cam] = np.asarray(Image.open(io.BytesIO(jpegs[cam])).convert("RGB"))
    a, b = engine.prepare(arrays, HISTORY), engine.prepare(jpegs, HISTORY)
    assert a.grids == b.grids == [(14, 24)] * 2 and torch.equal(a.input_ids, b.input_ids)
    for x, y in zip(a.resized, b.resized):
        assert np.abs(x.astype(int) - y.astype(int)).mean() < 2.0
    with pytest.raises(InputError, match="CAM_FRONT"):
        engine.prepare({**jpegs, "CAM_FRONT": b"not a jpeg"}, HISTORY)
