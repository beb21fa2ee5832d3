"""Typed hand-offs between the engine and pruners: no shared mutation, no kept model, honest time."""

from __future__ import annotations

import numpy as np
import torch

from fastdrivevla_ros.pruning.registry import build_pruner


def _front(camera_images) -> dict:
    return {"CAM_FRONT": np.ascontiguousarray(camera_images["CAM_FRONT"][::4, ::4])}


def test_the_callers_extras_are_not_changed(engine, camera_images):
    """VisPruner's vision-hook output stays in the engine's copy, not the caller's dict."""
    engine.configure(cameras=("CAM_FRONT",), pruning_ratio=0.5, max_new_tokens=2)
    engine.pruner = build_pruner("vispruner")
    extras = {"timestamp": 0.0}
    result = engine.plan(_front(camera_images), extras=extras)
    assert extras == {"timestamp": 0.0}
    assert result.views[0].num_kept < result.views[0].num_tokens


def test_vision_hooks_leave_the_layer_schedule_alone(engine):
    """Depth is fitted once, when the engine takes the pruner, never by a per-frame hook."""
    fresh = build_pruner("sparsevlm")
    with fresh.vision_hooks(engine.model):
        pass
    assert fresh.depth == 36                       # the constructor's, not the tiny model's
    engine.pruner = fresh
    assert fresh.depth == engine.model.config.text_config.num_hidden_layers


def test_pruners_do_not_keep_the_model(engine, camera_images):
    engine.configure(cameras=("CAM_FRONT",), pruning_ratio=0.5, max_new_tokens=4)
    engine.pruner = pruner = build_pruner("vla_pruner")
    engine.plan(_front(camera_images), extras={"timestamp": 0.0})
    kept = [name for name, value in vars(pruner).items() if isinstance(value, torch.nn.Module)]
    assert kept == []
    assert len(pruner.streams["default"].frames) == 1      # observe() still saw the decode


def test_total_is_the_plans_wall_time_with_parse_and_observe_timed(engine, camera_images):
    import time

    engine.configure(cameras=("CAM_FRONT",), pruning_ratio=0.5, max_new_tokens=4)
    engine.pruner = build_pruner("vla_pruner")
    start = time.perf_counter()
    result = engine.plan(_front(camera_images), extras={"timestamp": 0.0})
    wall_ms = (time.perf_counter() - start) * 1e3
    ms = result.timings_ms
    assert {"parse", "observe"} <= set(ms)
    stages = sum(v for k, v in ms.items() if k != "total")
    assert stages <= ms["total"] <= wall_ms
