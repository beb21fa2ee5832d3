"""Shared fixtures: tiny real things built once per session (no mocks, no downloads)."""

from __future__ import annotations

from pathlib import Path

from _scene import require_scene
import numpy as np
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    """
    Collect a test module lazily, as pytest does, unless it is a launch_testing test.

    launch_testing's pytest plugin (active wherever ROS 2 is sourced) imports every module of a
    folder while collecting, to look for `generate_test_description`; `colcon test` of one
    linter would then import all test modules, and die on a machine without torch. Our launch
    tests use launch_pytest, which needs no such import.
    """
    if "generate_test_description" in module_path.read_text(errors="replace"):
        return None
    return pytest.Module.from_parent(parent, path=module_path)


def pytest_configure(config):
    """
    Pin one torch thread: tests check behaviour, not speed (small CI machines).

    torch is imported here, not at module level, so the ament linter tests still run in a ROS
    environment without torch.
    """
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """Pin one intra-op thread for a test even if the suite's setting was changed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint with `make-tiny-model`."""
    from fastdrivevla_ros.vla.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_vla(tiny_model_dir):
    """(model, tokenizer, image_processor) loaded through the product's own loader."""
    from fastdrivevla_ros.vla.loading import load_vla

    return load_vla(tiny_model_dir)


@pytest.fixture
def engine(tiny_vla):
    """Return a fresh DrivingVLA over the shared tiny model (settings/pruner free to change)."""
    from fastdrivevla_ros.vla.engine import DrivingVLA, PlannerSettings

    model, tok, proc = tiny_vla
    return DrivingVLA(model, tok, proc, PlannerSettings(max_new_tokens=24, constrained=False))


@pytest.fixture(scope="session")
def scene_dir() -> Path:
    """Return the real nuScenes scene; under CI a missing one fails (_scene.require_scene)."""
    return require_scene()


@pytest.fixture
def camera_images():
    """Six deterministic 1600x900 RGB frames (structured, not pure noise)."""
    from fastdrivevla_ros.vla.prompt import CAMERAS

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:900, 0:1600]
    out = {}
    for i, cam in enumerate(CAMERAS):
        base = np.stack([(xx + 50 * i) % 256, (yy * 2) % 256, (xx + yy) % 256], -1)
        out[cam] = (base + rng.integers(0, 30, base.shape)).clip(0, 255).astype(np.uint8)
    return out
