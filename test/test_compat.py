"""The pinned transformers window and the one accessor into transformers' KV cache."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from fastdrivevla_ros.compat import TRANSFORMERS_REQUIREMENT, cached_keys, check_transformers
from fastdrivevla_ros.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parents[1]


def test_installed_transformers_is_inside_the_pinned_window():
    check_transformers()                       # the release this suite runs on
    for inside in ("5.24.0", "5.39.2"):
        check_transformers(inside)
    for outside in ("5.23.0", "5.0.0", "5.40.0", "6.0.0"):
        with pytest.raises(ConfigError, match=re.escape(TRANSFORMERS_REQUIREMENT)):
            check_transformers(outside)


def test_every_install_route_pins_the_same_window():
    """setup.py, package.xml and docs/ros.md state the window load_vla enforces (the ROS
    workflow derives its pin from setup.py, test_launch_files.py)."""
    low, high = re.fullmatch(r"transformers>=([\d.]+),<([\d.]+)",
                             TRANSFORMERS_REQUIREMENT).groups()
    setup = ast.parse((REPO / "setup.py").read_text())
    requires = next(ast.literal_eval(kw.value) for node in ast.walk(setup)
                    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
                    for kw in node.keywords if kw.arg == "install_requires")
    assert [r for r in requires if r.startswith("transformers")] == [TRANSFORMERS_REQUIREMENT]
    dep = [d for d in ET.parse(REPO / "package.xml").getroot().iter("exec_depend")
           if d.text == "python3-transformers-pip"]
    assert [(d.get("version_gte"), d.get("version_lt")) for d in dep] == [(low, high)]
    docs = (REPO / "docs" / "ros.md").read_text()
    assert re.findall(r"transformers[<>=][^\"`' ]*", docs) == [TRANSFORMERS_REQUIREMENT] * 2


def test_cached_keys_are_what_the_decoder_layer_stored(tiny_vla):
    """Keys of layer 1 after a real decoder-layer call, against the layer's own k_proj + RoPE."""
    from transformers import DynamicCache
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

    model = tiny_vla[0]
    text = model.model.language_model
    layer = text.layers[1]
    cache = DynamicCache(config=model.config.text_config)
    h = torch.randn(1, 5, model.config.text_config.hidden_size)
    positions = torch.arange(5).view(1, 1, -1).expand(3, 1, -1)
    pe = text.rotary_emb(h, positions)
    with torch.no_grad():
        text.layers[0](h, position_embeddings=pe, cache=cache, use_cache=True)
        layer(h, position_embeddings=pe, cache=cache, use_cache=True)
        attn = layer.self_attn
        k = attn.k_proj(layer.input_layernorm(h)).view(1, 5, -1, attn.head_dim).transpose(1, 2)
        _, k = apply_rotary_pos_emb(k, k, *pe)
    torch.testing.assert_close(cached_keys(cache, 1), k)
    with pytest.raises(InputError):
        cached_keys(cache, len(text.layers))
