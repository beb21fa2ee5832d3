"""ReconPruner: FastDriveVLA's plug-and-play visual-token scorer (paper Eq. 1, 2 and 9).

    [Q*, V*] = PrunerLayer([Q; V])          (1)  one Qwen2.5-VL decoder layer, FULL attention
    S        = Scorer(V* ⊙ Q*)              (2)  Scorer = Linear(D -> 1)
    I        = TopK(S, floor(N (1 - p)))    (9)  done by the engine through `Pruner.select`

V are the post-merger visual tokens of one view ([N, D], D = the LLM width: 2048 for 3B, so the
pruner is one 3B decoder layer, about 0.077B parameters). Inside the layer the visual tokens carry
2D rotary positions (t = 0, h = row, w = col in Qwen's M-RoPE sections); the query token Q carries
none (identity rotation). A trained pruner is a directory with `config.json` (which VLA it belongs
to: LLM width, layer shape, vision-encoder config and a weight fingerprint) and
`model.safetensors`; `ReconPruner.check_compatible` refuses a VLA it was not trained for.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from fastdrivevla_ros.checkpoint import CONFIG_NAME, read_config, save_weights, WEIGHTS_NAME
from fastdrivevla_ros.errors import CheckpointError, ConfigError
from fastdrivevla_ros.pruning.base import PruneContext, Pruner

MODEL_TYPE = "fastdrivevla_recon_pruner"
FORMAT_VERSION = 1

# What one LLM decoder layer needs from the VLA's text config (plus rope_parameters).
LAYER_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
              "hidden_act", "rms_norm_eps", "attention_dropout")
# Which vision encoder produced the tokens the pruner was trained on.
VISION_KEYS = ("depth", "hidden_size", "num_heads", "intermediate_size", "out_hidden_size",
               "patch_size", "spatial_merge_size", "temporal_patch_size", "window_size",
               "fullatt_block_indexes", "in_channels")
FINGERPRINT_RTOL = 1e-3   # bf16 vs fp32 loading changes these statistics by ~1e-5 (relative)


# ---------------------------------------------------------------------------- config helpers
def layer_config_from_vla(text_config) -> dict:
    """The VLA text config's entries that define one decoder layer (JSON-serialisable)."""
    d = {k: getattr(text_config, k) for k in LAYER_KEYS}
    d["rope_parameters"] = dict(text_config.rope_parameters)
    return d


def vision_signature(vision_config) -> dict:
    return {k: getattr(vision_config, k, None) for k in VISION_KEYS}


def layer_text_config(layer: dict, attn_implementation: str = "sdpa"):
    """A 1-layer Qwen2_5_VLTextConfig for building decoder layers of the given shape."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig

    missing = [k for k in (*LAYER_KEYS, "rope_parameters") if k not in layer]
    if missing:
        raise CheckpointError(f"layer config lacks {missing}")
    cfg = Qwen2_5_VLTextConfig(num_hidden_layers=1, vocab_size=1, bos_token_id=None,
                               eos_token_id=None, pad_token_id=None, **layer)
    cfg._attn_implementation = attn_implementation
    return cfg


def vision_fingerprint(model) -> list[float]:
    """Cheap identity of a VLA's vision encoder + merger: mean |w| and std of the patch embedding
    and of the merger's output projection. Differs for a fine-tuned encoder; survives dtype
    casts."""
    visual = model.model.visual
    out = []
    for w in (visual.patch_embed.proj.weight, visual.merger.mlp[-1].weight):
        w = w.detach().double()
        out += [float(w.abs().mean()), float(w.std())]
    return out


# ---------------------------------------------------------------------------- shared layer code
def full_attention_layers(text_config, n: int) -> nn.ModuleList:
    """n Qwen2.5-VL decoder layers with the causal mask switched off (reconstruction and scoring
    are non-causal): with attention_mask=None every attention backend then attends to all.
    layer_idx only addresses a KV cache, which these layers never use."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLDecoderLayer

    layers = nn.ModuleList(Qwen2_5_VLDecoderLayer(text_config, layer_idx=0) for _ in range(n))
    for layer in layers:
        layer.self_attn.is_causal = False
    return layers


def grid_position_ids(grid: tuple[int, int], indices: torch.Tensor | None = None,
                      device=None) -> torch.Tensor:
    """[3, n] M-RoPE positions of visual tokens: (t, h, w) = (0, row, col) for raster `indices`
    (default: the whole grid). Only differences matter under full attention, so Qwen's per-image
    offset is left out."""
    rows, cols = grid
    if indices is None:
        indices = torch.arange(rows * cols, device=device)
    indices = indices.to(device) if device is not None else indices
    return torch.stack([torch.zeros_like(indices), indices // cols, indices % cols])


def rotary_embeddings(rotary, x: torch.Tensor, positions: torch.Tensor, n_free: int = 0):
    """cos/sin [B, n_free + n, head_dim] for a sequence whose first `n_free` tokens get NO
    rotation (cos = 1, sin = 0; the query token) and whose other tokens sit at `positions` [3, n].
    x: [B, n_free + n, D] (only dtype/device/batch are read)."""
    b = x.shape[0]
    cos, sin = rotary(x, positions[:, None, :].expand(3, b, -1))
    if n_free:
        ones = torch.ones_like(cos[:, :1]).expand(-1, n_free, -1)
        cos, sin = torch.cat([ones, cos], 1), torch.cat([torch.zeros_like(ones), sin], 1)
    return cos, sin


def load_layer_weights(target: nn.Module, source: nn.Module, what: str) -> None:
    try:
        target.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"cannot initialise {what} from the VLA's layer: {e}") from e


# ---------------------------------------------------------------------------- the model
@dataclass
class ReconPrunerConfig:
    """layer: one decoder layer's shape (LAYER_KEYS + rope_parameters); vision: the vision encoder
    config it was trained behind; vision_fingerprint: see `vision_fingerprint`; init_layer: the
    VLA's LLM layer the PrunerLayer started from (None = random); source/training: provenance."""

    layer: dict
    vision: dict
    vision_fingerprint: list[float] | None = None
    init_layer: int | None = 0
    source: str = ""
    training: dict = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.layer["hidden_size"])

    @classmethod
    def from_vla(cls, model, init_layer: int | None = 0, source: str = "") -> "ReconPrunerConfig":
        cfg = model.config
        return cls(layer=layer_config_from_vla(cfg.text_config),
                   vision=vision_signature(cfg.vision_config),
                   vision_fingerprint=vision_fingerprint(model), init_layer=init_layer,
                   source=str(source or getattr(cfg, "_name_or_path", "")))

    def to_json(self) -> str:
        return json.dumps({"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION,
                           **asdict(self)}, indent=2)

    @classmethod
    def from_json_file(cls, path: Path) -> "ReconPrunerConfig":
        d = read_config(path, "ReconPruner config")
        if d.get("model_type") != MODEL_TYPE:
            raise CheckpointError(f"{path}: not a ReconPruner config (model_type "
                                  f"{d.get('model_type')!r}, expected {MODEL_TYPE!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: format_version {d.get('format_version')!r} is not "
                                  f"supported (expected {FORMAT_VERSION})")
        if not isinstance(d.get("layer"), dict) or not isinstance(d.get("vision"), dict):
            raise CheckpointError(f"{path}: 'layer' and 'vision' must be objects")
        fp = d.get("vision_fingerprint")
        if fp is not None and (not isinstance(fp, list) or
                               not all(isinstance(x, (int, float)) for x in fp)):
            raise CheckpointError(f"{path}: 'vision_fingerprint' must be a list of numbers")
        return cls(layer=d["layer"], vision=d["vision"], vision_fingerprint=fp,
                   init_layer=d.get("init_layer"), source=str(d.get("source", "")),
                   training=dict(d.get("training") or {}))


class ReconPruner(nn.Module):
    """PrunerLayer + query token + Scorer. forward(V [B, N, D], positions [3, N]) -> S [B, N]."""

    def __init__(self, config: ReconPrunerConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding

        self.config = config
        text_config = layer_text_config(config.layer, attn_implementation)
        d = config.hidden_size
        self.layer = full_attention_layers(text_config, 1)[0]
        self.rotary = Qwen2_5_VLRotaryEmbedding(text_config)
        self.query = nn.Parameter(torch.randn(1, d) * 0.02)        # Q in R^{1 x D}
        # Scorer: one linear layer, weight D x 1. Its bias starts at zero so the initial AFBR split
        # (S > 0, Eq. 3) depends on the tokens; during training it absorbs the shared shift of
        # all scores, so the threshold need not be expressed through (and distort) the ranking
        self.scorer = nn.Linear(d, 1)
        nn.init.zeros_(self.scorer.bias)

    # --------------------------------------------------------------------- construction
    @classmethod
    def from_vla(cls, model, init_layer: int | None = 0, source: str = "",
                 attn_implementation: str = "sdpa") -> "ReconPruner":
        """A fresh (untrained) pruner for `model`; the PrunerLayer copies LLM layer `init_layer`
        (None: random init), the query and the scorer are random."""
        config = ReconPrunerConfig.from_vla(model, init_layer, source)
        pruner = cls(config, attn_implementation)
        if init_layer is not None:
            layers = model.model.language_model.layers
            if not 0 <= init_layer < len(layers):
                raise ConfigError(f"init_layer {init_layer} out of range: the VLA has "
                                  f"{len(layers)} LLM layers")
            load_layer_weights(pruner.layer, layers[init_layer], "the PrunerLayer")
        return pruner

    @classmethod
    def from_pretrained(cls, path: str | Path, attn_implementation: str = "sdpa") -> "ReconPruner":
        """Load a directory written by `save_pretrained` (safetensors only)."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"ReconPruner directory {path} does not exist")
        config = ReconPrunerConfig.from_json_file(path / CONFIG_NAME)
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{path}: no {WEIGHTS_NAME} (ReconPruner weights are read from "
                                  "safetensors only)")
        pruner = cls(config, attn_implementation)
        pruner.load_weights(weights)
        return pruner

    def load_weights(self, file: Path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(file))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{file}: unreadable safetensors ({e})") from e
        expected, found = set(self.state_dict()), set(state)
        if found != expected:
            raise CheckpointError(
                f"{file}: weights do not match the config (missing "
                f"{sorted(expected - found)[:5]}, unexpected {sorted(found - expected)[:5]})")
        bad = [k for k, v in state.items() if not torch.isfinite(v.float()).all()]
        if bad:
            raise CheckpointError(f"{file}: non-finite values in {bad[:5]} (diverged training?)")
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{file}: {e}") from e

    def save_pretrained(self, path: str | Path) -> Path:
        return save_weights(self, path, self.config.to_json())

    def check_compatible(self, model, check_vision_weights: bool = True) -> None:
        """Raise CheckpointError unless `model` (a Qwen2.5-VL) produces the tokens this pruner was
        trained on: the same LLM width and the same vision encoder."""
        cfg = model.config
        d_vla, d = cfg.text_config.hidden_size, self.config.hidden_size
        if d_vla != d:
            raise CheckpointError(
                f"ReconPruner was trained for LLM width D={d} but this VLA has D={d_vla}; train a "
                "pruner for this model with `fastdrivevla train-pruner --model ...`")
        ours, theirs = self.config.vision, vision_signature(cfg.vision_config)
        diff = {k: (ours.get(k), theirs[k]) for k in VISION_KEYS if ours.get(k) != theirs[k]}
        if diff:
            raise CheckpointError(f"ReconPruner was trained behind a different vision encoder "
                                  f"(pruner vs VLA: {diff})")
        fp = self.config.vision_fingerprint
        if check_vision_weights and fp is not None:
            now = vision_fingerprint(model)
            if len(now) != len(fp) or any(not math.isclose(a, b, rel_tol=FINGERPRINT_RTOL)
                                          for a, b in zip(fp, now)):
                raise CheckpointError(
                    "ReconPruner was trained on a vision encoder with different weights (same "
                    f"architecture; fingerprint {fp} vs {now}); retrain it for this VLA or pass "
                    "check_vision_weights=False if the encoders are known to be equivalent")

    # --------------------------------------------------------------------- forward
    def forward_layer(self, v: torch.Tensor, positions: torch.Tensor):
        """Eq. 1: [Q*, V*] = PrunerLayer([Q; V]). v: [B, N, D]; positions: [3, N].
        Returns q_star [B, 1, D], v_star [B, N, D]."""
        x = torch.cat([self.query.to(v.dtype).expand(v.shape[0], 1, -1), v], dim=1)
        pe = rotary_embeddings(self.rotary, x, positions, n_free=1)
        x = self.layer(x, attention_mask=None, position_embeddings=pe)
        return x[:, :1], x[:, 1:]

    def forward_scorer(self, q_star: torch.Tensor, v_star: torch.Tensor) -> torch.Tensor:
        """Eq. 2: S = Scorer(V* ⊙ Q*). q_star: [B, 1, D]; v_star: [B, N, D] -> S [B, N]."""
        return self.scorer(v_star * q_star)[..., 0]

    def forward(self, v: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """v: [B, N, D] post-merger visual tokens; positions: [3, N] (t, h, w) -> S [B, N]."""
        return self.forward_scorer(*self.forward_layer(v, positions))


def parameter_count(layer: dict) -> int:
    """Parameters of a ReconPruner of the given layer shape, built on the meta device."""
    with torch.device("meta"):
        net = ReconPruner(ReconPrunerConfig(layer=layer, vision={}))
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------------------- the Pruner
class ReconPrunerScorer(Pruner):
    """`recon`: scores the post-merger tokens of each view with a trained ReconPruner and keeps
    the top K = floor(N (1 - p)) (Eq. 9), before the LLM (layer 0).

    weights: directory written by `fastdrivevla train-pruner` (or `ReconPruner.save_pretrained`).
    untrained: build a fresh pruner from the attached VLA instead (tests, demo, timing); its
      PrunerLayer copies LLM layer `init_layer`, query and scorer are random from `seed`.
    check_vision_weights: also compare the vision encoder's weight fingerprint (default on).
    """

    name = "recon"
    layers = (0,)

    def __init__(self, weights: str | None = None, untrained: bool = False, init_layer: int = 0,
                 seed: int = 0, check_vision_weights: bool = True,
                 attn_implementation: str = "sdpa"):
        if (weights is None) == (not untrained):
            raise ConfigError("pruner 'recon' needs weights=DIR (a trained ReconPruner, e.g. "
                              "`--pruner-weights DIR`) or untrained=True, not both")
        self.weights = str(weights) if weights is not None else None
        self.init_layer, self.seed = int(init_layer), int(seed)
        self.check_vision_weights = bool(check_vision_weights)
        self.attn_implementation = attn_implementation
        # load now so a bad directory fails when the pruner is configured, not at the first frame
        self.net = (ReconPruner.from_pretrained(self.weights, attn_implementation)
                    if self.weights else None)
        self._checked_for: int | None = None

    def _net_for(self, model, features: torch.Tensor) -> ReconPruner:
        """The pruner network, checked against (or built from) `model`, on the features' device
        and dtype."""
        if self.net is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self.net = ReconPruner.from_vla(model, self.init_layer,
                                                attn_implementation=self.attn_implementation)
            self._checked_for = id(model)
        if self._checked_for != id(model):
            self.net.check_compatible(model, self.check_vision_weights)
            self._checked_for = id(model)
        p = next(self.net.parameters())
        if p.device != features.device or p.dtype != features.dtype:
            self.net.to(device=features.device, dtype=features.dtype)
        return self.net.eval()

    @torch.no_grad()
    def score(self, ctx: PruneContext) -> list[torch.Tensor]:
        out = []
        for view in ctx.views:
            net = self._net_for(ctx.model, view.features)
            positions = grid_position_ids(view.grid, view.indices, view.features.device)
            out.append(net(view.features[None], positions)[0].float())
        return out
