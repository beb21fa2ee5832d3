"""The reconstruction decoder D of FastDriveVLA's AFBR training (paper Eq. 6).

Six Qwen2.5-VL decoder layers with FULL attention over the (partly zeroed) visual tokens, a final
RMSNorm and a feed-forward head that predicts every token's 28x28 pixel patch; `unpatchify` puts
the patches back into the processor-resized image (1 token = 28x28 px, raster order), exactly as
MAE's decoder does for its 16x16 patches.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from fastdrivevla_ros.checkpoint import CONFIG_NAME, read_config, save_weights, WEIGHTS_NAME
from fastdrivevla_ros.errors import CheckpointError, ConfigError
from fastdrivevla_ros.pruning.recon import (full_attention_layers, layer_config_from_vla,
                                            layer_text_config, load_layer_weights,
                                            rotary_embeddings)

PATCH = 28          # pixels per LLM visual token side (14-px ViT patches merged 2x2)
MODEL_TYPE = "fastdrivevla_recon_decoder"


# ---------------------------------------------------------------------------- patch helpers
def patchify(imgs: torch.Tensor, p: int = PATCH) -> torch.Tensor:
    """imgs: [B, C, H, W] (H, W multiples of p) -> [B, N, p*p*C], tokens in raster order."""
    b, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not a multiple of the {p}-px token size")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("bchpwq->bhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, grid: tuple[int, int], p: int = PATCH) -> torch.Tensor:
    """x: [B, N, p*p*C] with N = rows*cols -> imgs [B, C, rows*p, cols*p]."""
    rows, cols = grid
    b, n, d = x.shape
    c = d // (p * p)
    if n != rows * cols or c * p * p != d:
        raise ValueError(f"{n} tokens of {d} values do not fill a {rows}x{cols} grid of "
                         f"{p}x{p} patches")
    x = x.reshape(b, rows, cols, p, p, c)
    x = torch.einsum("bhwpqc->bchpwq", x)
    return x.reshape(b, c, rows * p, cols * p)


# ---------------------------------------------------------------------------- decoder
@dataclass
class DecoderConfig:
    """layer: one decoder layer's shape (as in ReconPrunerConfig); depth: number of layers (6 in
    the paper); out_channels: 3 (RGB); init_layers: the VLA LLM layers copied (None = random)."""

    layer: dict
    depth: int = 6
    out_channels: int = 3
    init_layers: list[int] | None = None

    def __post_init__(self):
        if not 1 <= self.depth <= 64:
            raise ConfigError(f"decoder depth must be in [1, 64], got {self.depth}")
        if self.out_channels not in (1, 3):
            raise ConfigError(f"decoder out_channels must be 1 or 3, got {self.out_channels}")


class ReconDecoder(nn.Module):
    """D: forward(V [B, N, D], positions [3, N]) -> patches [B, N, 28*28*C] (Eq. 6)."""

    def __init__(self, config: DecoderConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            Qwen2_5_VLRMSNorm, Qwen2_5_VLRotaryEmbedding)

        self.config = config
        text_config = layer_text_config(config.layer, attn_implementation)
        d = text_config.hidden_size
        self.layers = full_attention_layers(text_config, config.depth)
        self.rotary = Qwen2_5_VLRotaryEmbedding(text_config)
        self.norm = Qwen2_5_VLRMSNorm(d, eps=text_config.rms_norm_eps)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(),
                                  nn.Linear(d, PATCH * PATCH * config.out_channels))

    @classmethod
    def from_vla(cls, model, depth: int = 6, init: str = "vla",
                 attn_implementation: str = "sdpa") -> "ReconDecoder":
        """init='vla': layer i copies LLM layer i (cycling if the LLM has fewer than `depth`);
        init='random': fresh weights."""
        if init not in ("vla", "random"):
            raise ConfigError(f"decoder init must be 'vla' or 'random', got {init!r}")
        llm_layers = model.model.language_model.layers
        source = [i % len(llm_layers) for i in range(depth)] if init == "vla" else None
        config = DecoderConfig(layer=layer_config_from_vla(model.config.text_config), depth=depth,
                               init_layers=source)
        decoder = cls(config, attn_implementation)
        for i, j in enumerate(source or []):
            load_layer_weights(decoder.layers[i], llm_layers[j], f"decoder layer {i}")
        return decoder

    def forward(self, v: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """v: [B, N, D]; positions: [3, N] -> per-token pixel patches [B, N, 28*28*C]."""
        pe = rotary_embeddings(self.rotary, v, positions)
        x = v
        for layer in self.layers:
            x = layer(x, attention_mask=None, position_embeddings=pe)
        return self.head(self.norm(x))

    # --------------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | Path) -> Path:
        config = {"model_type": MODEL_TYPE, **asdict(self.config)}
        return save_weights(self, path, json.dumps(config, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, attn_implementation: str = "sdpa") -> "ReconDecoder":
        from safetensors.torch import load_file

        path = Path(path)
        d = read_config(path / CONFIG_NAME, "reconstruction decoder config")
        if d.pop("model_type", None) != MODEL_TYPE:
            raise CheckpointError(f"{path}: not a reconstruction decoder directory")
        try:
            decoder = cls(DecoderConfig(**d), attn_implementation)
            decoder.load_state_dict(load_file(str(path / WEIGHTS_NAME)), strict=True)
        except (OSError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: cannot load the reconstruction decoder ({e})") from e
        return decoder
