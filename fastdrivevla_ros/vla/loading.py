"""Load any Qwen2.5-VL checkpoint safely: safetensors only, no remote code, checked config."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastdrivevla_ros.compat import check_transformers
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
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_file}: unreadable config ({e})") from e
    if "auto_map" in config:
        raise CheckpointError(
            f"{path}: config.json has 'auto_map' (custom remote code). fastdrivevla never runs "
            "checkpoint code; use a checkpoint of the stock Qwen2.5-VL architecture.")
    if config.get("model_type") != "qwen2_5_vl":
        raise CheckpointError(f"{path}: model_type is {config.get('model_type')!r}, "
                              "expected 'qwen2_5_vl'")
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = (f" It only has pickle weights ({', '.join(pickles)}), which can execute code "
                "when loaded; convert them to safetensors with a trusted tool first.") if pickles else ""
        raise CheckpointError(f"{path}: no *.safetensors weights.{hint}")


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
