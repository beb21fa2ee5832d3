"""ReconPruner plugs into the engine like every pruner and round-trips through safetensors."""

import math

import pytest
import torch

from fastdrivevla_ros.errors import CheckpointError, ConfigError
from fastdrivevla_ros.pruning.recon import ReconPruner, grid_position_ids
from fastdrivevla_ros.pruning.registry import build_pruner


def test_recon_keeps_floor_budget_per_view_through_the_engine(engine, camera_images):
    engine.pruner = build_pruner("recon", untrained=True)
    engine.configure(pruning_ratio=0.5, cameras=("CAM_FRONT", "CAM_BACK"), max_new_tokens=2)
    result = engine.plan({c: camera_images[c] for c in ("CAM_FRONT", "CAM_BACK")})
    for view in result.views:
        assert view.num_kept == math.floor(view.num_tokens * 0.5)
        assert view.scores is not None and torch.isfinite(torch.as_tensor(view.scores)).all()


def test_recon_needs_weights_or_explicit_untrained():
    with pytest.raises(ConfigError, match="weights"):
        build_pruner("recon")


def test_saved_recon_pruner_scores_identically_after_loading(tiny_vla, tmp_path):
    model, _, _ = tiny_vla
    net = ReconPruner.from_vla(model)
    net.save_pretrained(tmp_path)
    again = ReconPruner.from_pretrained(tmp_path)
    v = torch.randn(1, 12, model.config.text_config.hidden_size)
    positions = grid_position_ids((3, 4))
    with torch.no_grad():
        torch.testing.assert_close(again(v, positions), net(v, positions))


def test_missing_recon_weights_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError):
        ReconPruner.from_pretrained(tmp_path)
