"""Load any Qwen2.5-VL checkpoint safely: safetensors only, no remote code, checked config."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastdrivevla_ros.checkpoint import check_safetensors, read_config
from fastdrivevla_ros.compat import check_transformers
from fastdrivevla_ros.conventions import TOKEN_PX
from fastdrivevla_ros.errors import CheckpointError, ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def check_local_checkpoint(path: Path) -> None:
    """Refuse what we must not load: pickle-only weights, remote code, other architectures."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json; is this a Hugging Face checkpoint dir?")
    config = read_config(config_file)
    if "auto_map" in config:
        raise CheckpointError(
            f"{path}: config.json has 'auto_map' (custom remote code). fastdrivevla never runs "
            "checkpoint code; use a checkpoint of the stock Qwen2.5-VL architecture.")
    if config.get("model_type") != "qwen2_5_vl":
        raise CheckpointError(f"{path}: model_type is {config.get('model_type')!r}, "
                              "expected 'qwen2_5_vl'")
    vision = config.get("vision_config") or {}
    token_px = vision.get("patch_size", 14) * vision.get("spatial_merge_size", 2)
    if token_px != TOKEN_PX:
        raise CheckpointError(f"{path}: one visual token covers {token_px} px (patch_size x "
                              f"spatial_merge_size); token grids here assume {TOKEN_PX}")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = (f" It only has pickle weights ({', '.join(pickles)}), which can execute code "
                "when loaded; convert them to safetensors with a trusted tool first.") if pickles else ""
        raise CheckpointError(f"{path}: no *.safetensors weights.{hint}")
    for f in weights:
        check_safetensors(f)
    if not (path / "tokenizer.json").is_file() and not all(
            (path / n).is_file() for n in ("vocab.json", "merges.txt")):
        raise CheckpointError(f"{path}: no tokenizer.json (nor vocab.json + merges.txt); copy "
                              "the tokenizer files of the checkpoint into the folder")


def cached_hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's copy of hub model `repo_id`, or None (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(repo_id), local_files_only=True))
    except Exception:       # not a hub id, or not downloaded
        return None


def load_vla(path_or_repo_id: str | Path, dtype: str = "float32", device: str = "cpu",
             attn_implementation: str = "sdpa"):
    """Returns (model, tokenizer, image_processor), the model in eval mode on `device`.

    A hub id is fetched by transformers (safetensors only); a local dir is checked first.
    """
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil)

    check_transformers()
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}")
    torch_dtype = parse_dtype(dtype)
    local = Path(path_or_repo_id).expanduser()
    if local.exists():
        check_local_checkpoint(local)
        source = str(local)
    elif str(path_or_repo_id).startswith((".", "/", "~")):
        raise CheckpointError(f"model directory {path_or_repo_id} does not exist")
    else:
        source = str(path_or_repo_id)  # a hub id
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            source, dtype=torch_dtype, attn_implementation=attn_implementation,
            use_safetensors=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load Qwen2.5-VL from {source}: {e}") from e
    if tokenizer.chat_template is None and local.exists():
        tokenizer.chat_template = _processor_chat_template(local)
    if tokenizer.chat_template is None:
        raise CheckpointError(f"{source}: the tokenizer has no chat template")
    return model.to(device).eval(), tokenizer, image_processor


def _processor_chat_template(path: Path) -> str | None:
    """Qwen2.5-VL hub checkpoints may keep the template in the processor's chat_template.json."""
    f = path / "chat_template.json"
    if not f.is_file():
        return None
    try:
        template = json.loads(f.read_text()).get("chat_template")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise CheckpointError(f"{f}: unreadable chat template ({e})") from e
    return template if isinstance(template, str) else None
