"""ReconPruner: shapes, size at 3B width, non-causal scoring, 2D positions, persistence, checks
against the VLA, and use as the engine's `recon` pruner."""

from __future__ import annotations

import json

import pytest
import torch

from fastdrivevla_ros.errors import CheckpointError, ConfigError
from fastdrivevla_ros.pruning.recon import (ReconPruner, grid_position_ids, layer_config_from_vla,
                                            parameter_count, rotary_embeddings)


@pytest.fixture(scope="module")
def vla_model(tiny_vla):
    return tiny_vla[0]


@pytest.fixture(scope="module")
def pruner(vla_model):
    torch.manual_seed(0)
    return ReconPruner.from_vla(vla_model).eval()


def test_parameter_count_at_3b_width_is_about_0_07b():
    """One Qwen2.5-VL-3B decoder layer (D=2048, MLP 11008, 16/2 heads) + Q + Scorer."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig

    cfg = Qwen2_5_VLTextConfig(hidden_size=2048, intermediate_size=11008, num_hidden_layers=1,
                               num_attention_heads=16, num_key_value_heads=2, vocab_size=1,
                               rope_theta=1e6, bos_token_id=None, eos_token_id=None,
                               rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
    n = parameter_count(layer_config_from_vla(cfg))
    attention = (2048 * 2048 + 2048) + 2 * (2048 * 256 + 256) + 2048 * 2048   # q, k, v (+bias), o
    mlp, norms, query, scorer = 3 * 2048 * 11008, 2 * 2048, 2048, 2048 + 1
    assert n == attention + mlp + norms + query + scorer == 77_081_089      # "0.07B"


def test_scores_have_one_value_per_visual_token(pruner):
    v = torch.randn(2, 12, pruner.config.hidden_size) * 0.03
    s = pruner(v, grid_position_ids((3, 4)))
    assert s.shape == (2, 12) and torch.isfinite(s).all()


def test_attention_is_full_not_causal(pruner):
    """Changing the LAST token must change the FIRST token's score (causal attention would not)."""
    v = torch.randn(1, 12, pruner.config.hidden_size) * 0.03
    pos = grid_position_ids((3, 4))
    with torch.no_grad():
        a = pruner(v, pos)
        v2 = v.clone()
        v2[0, -1] += 0.5
        b = pruner(v2, pos)
    assert not torch.allclose(a[0, 0], b[0, 0])


def test_visual_tokens_carry_row_col_positions_and_query_has_none(pruner):
    pos = grid_position_ids((2, 3))
    assert pos.tolist() == [[0] * 6, [0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]]
    x = torch.zeros(1, 7, pruner.config.hidden_size)
    cos, sin = rotary_embeddings(pruner.rotary, x, pos, n_free=1)
    assert torch.equal(cos[0, 0], torch.ones_like(cos[0, 0]))      # query: identity rotation
    assert torch.equal(sin[0, 0], torch.zeros_like(sin[0, 0]))
    assert not torch.allclose(cos[0, 1], cos[0, 6])                 # tokens differ by position
    # the same tokens laid out on another grid score differently: positions reach the layer
    v = torch.randn(1, 6, pruner.config.hidden_size) * 0.03
    with torch.no_grad():
        assert not torch.allclose(pruner(v, grid_position_ids((2, 3))),
                                  pruner(v, grid_position_ids((3, 2))))


def test_pruner_layer_is_initialised_from_the_vla_layer(pruner, vla_model):
    src = vla_model.model.language_model.layers[0].state_dict()
    for k, t in pruner.layer.state_dict().items():
        assert torch.equal(t, src[k]), k


def test_save_load_round_trip_gives_identical_scores(pruner, tmp_path):
    pruner.save_pretrained(tmp_path / "p")
    files = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert files == ["config.json", "model.safetensors"]
    loaded = ReconPruner.from_pretrained(tmp_path / "p").eval()
    v = torch.randn(1, 12, pruner.config.hidden_size) * 0.03
    with torch.no_grad():
        assert torch.equal(pruner(v, grid_position_ids((3, 4))),
                           loaded(v, grid_position_ids((3, 4))))


def test_mismatched_llm_width_is_refused(pruner, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from fastdrivevla_ros.vla.tiny import build_config, build_tokenizer

    cfg = build_config(build_tokenizer(), "tiny")
    cfg.text_config.hidden_size, cfg.vision_config.out_hidden_size = 32, 32
    cfg.text_config.rope_parameters["mrope_section"] = [1, 1, 2]
    with torch.device("meta"):
        other = Qwen2_5_VLForConditionalGeneration(cfg)
    with pytest.raises(CheckpointError, match="D=64 but this VLA has D=32"):
        pruner.check_compatible(other)


def test_same_architecture_other_vision_weights_is_refused(pruner, vla_model):
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(123)
    other = Qwen2_5_VLForConditionalGeneration(vla_model.config)
    with pytest.raises(CheckpointError, match="different weights"):
        pruner.check_compatible(other)
    pruner.check_compatible(other, check_vision_weights=False)   # explicit opt-out works
    pruner.check_compatible(vla_model)


@pytest.mark.parametrize("damage", ["pickle_only", "wrong_type", "nan"])
def test_bad_directories_raise_checkpoint_error(pruner, tmp_path, damage):
    d = pruner.save_pretrained(tmp_path / damage)
    if damage == "pickle_only":
        (d / "model.safetensors").rename(d / "pytorch_model.bin")
    elif damage == "wrong_type":
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen2_5_vl"}))
    else:
        from safetensors.torch import load_file, save_file

        state = load_file(str(d / "model.safetensors"))
        state["query"][0, 0] = float("nan")
        save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError):
        ReconPruner.from_pretrained(d)


def test_recon_needs_weights_or_untrained():
    from fastdrivevla_ros.pruning.registry import build_pruner

    with pytest.raises(ConfigError, match="weights=DIR"):
        build_pruner("recon")
    with pytest.raises(CheckpointError, match="does not exist"):
        build_pruner("recon", weights="/nonexistent/recon")


def test_untrained_recon_in_engine_keeps_floor_half(engine, camera_images):
    from fastdrivevla_ros.pruning.registry import build_pruner

    engine.pruner = build_pruner("recon", untrained=True)
    engine.configure(pruning_ratio=0.5, max_pixels=128 * 128, max_new_tokens=2)
    result = engine.plan(camera_images)
    view = result.views[0]
    n = view.grid[0] * view.grid[1]
    assert len(view.kept) == n // 2
    assert result.pruner == "recon" and view.scores is not None
    assert torch.isfinite(torch.as_tensor(view.scores)).all()
