"""A weights directory: config.json + model.safetensors, read and written one way.

Shared by the VLA loader (vla/loading.py), ReconPruner (pruning/recon.py) and its
reconstruction decoder (training/decoder.py). Safetensors only: never pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastdrivevla_ros.errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def read_config(path: Path | str, what: str = "config") -> dict:
    """The JSON object in `path`; CheckpointError naming `what` if it is missing or not one."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable {what} ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: {what} is not a JSON object")
    return config


def check_safetensors(path: Path | str) -> None:
    """CheckpointError naming `path` unless its header parses and its tensors' data fits the
    file (a truncated or foreign file is caught here, before any loader fails obscurely).
    Reads only the header."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > size - 8:
                raise ValueError("header larger than the file")
            header = json.loads(f.read(n))
        end = max((int(t["data_offsets"][1]) for k, t in header.items()
                   if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it is "
                              "truncated or corrupt, replace it") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e
    if 8 + n + end != size:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({size} bytes, "
                              f"its header says {8 + n + end}); replace it")


def save_weights(module, path: Path | str, config_json: str) -> Path:
    """Write `module`'s state (float32, on the CPU) and its config into directory `path`."""
    import torch
    from safetensors.torch import save_file

    from fastdrivevla_ros.files import atomic_path, write_text

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous()
             for k, v in module.state_dict().items()}
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_text(path / CONFIG_NAME, config_json)
    return path
