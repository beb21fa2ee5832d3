"""The warm-up: blank-set plans before the first real one, in one place (DrivingVLA.warmup)."""

from __future__ import annotations

import argparse

import numpy as np


def test_warmup_plans_blank_frames_and_leaves_later_plans_unchanged(engine, camera_images):
    """A seeded pruner must draw after a warm-up what it draws cold (replays stay exact)."""
    from fastdrivevla_ros.pruning.registry import build_pruner

    engine.pruner = build_pruner("random")
    engine.configure(pruning_ratio=0.5, cameras=("CAM_FRONT", "CAM_BACK"))
    images = {cam: camera_images[cam] for cam in engine.settings.cameras}
    cold = engine.plan(images)
    engine.pruner.reset()                       # as a fresh process starts
    seen = []
    plan = engine.plan
    engine.plan = lambda frames, history=None, extras=None: seen.append(frames) or \
        plan(frames, history, extras)
    assert engine.warmup(0) == 0.0 and seen == []
    assert engine.warmup(2) > 0.0 and len(seen) == 2
    assert set(seen[0]) == {"CAM_FRONT", "CAM_BACK"}
    assert all(a.shape == (900, 1600, 3) and not a.any() for a in seen[0].values())
    warm = plan(images)
    assert warm.text == cold.text
    for a, b in zip(warm.views, cold.views):
        assert np.array_equal(a.kept, b.kept), a.camera


def test_the_node_warms_up_before_it_says_model_ready(tiny_model_dir):
    """The replay launch starts the bag on `model ready`: the warm-up must come first."""
    from fastdrivevla_ros.pipeline.diagnostics import DriveDiagnostics
    from fastdrivevla_ros.pipeline.params import validate_config
    from fastdrivevla_ros.pipeline.planner import build_engine, PlannerService

    config = validate_config({"model": str(tiny_model_dir), "device": "cpu",
                              "max_pixels": 112 * 112, "max_new_tokens": 4,
                              "constrained": False})
    assert config.warmup == 1                   # the schema's default, the node's
    logs, calls = [], []

    def factory(config, log):
        engine = build_engine(config, log)
        warmup = engine.warmup
        engine.warmup = lambda n: calls.append((n, list(logs), diagnostics.model[0])) or \
            warmup(n)
        return engine

    diagnostics = DriveDiagnostics(config.cameras)
    service = PlannerService(config, diagnostics, engine_factory=factory,
                             log=lambda level, message: logs.append(message))
    assert service.load()
    (plans, logged_before, state), = calls
    assert plans == 1 and state == "warming up"
    assert not any("model ready" in m for m in logged_before)
    assert any(m.startswith("model ready") and "warm-up 1 plan(s)" in m for m in logs)
    model = diagnostics.report(0.0)[0]
    assert model.values["state"] == "ready" and float(model.values["warmup_s"]) > 0.0


def _defaults(command: str) -> dict:
    import importlib

    from fastdrivevla_ros.cli import COMMANDS
    from fastdrivevla_ros.cli.settings import resolve_settings

    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command][0]).configure_parser(parser)
    args = parser.parse_args({"plan": [], "replay": ["BAG", "--out", "RUN"]}[command])
    return resolve_settings(args, ["warmup"])


def test_cli_warmup_defaults_none_for_plan_one_for_replay():
    assert _defaults("plan")["warmup"] == 0
    assert _defaults("replay")["warmup"] == 1
