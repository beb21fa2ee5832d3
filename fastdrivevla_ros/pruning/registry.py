"""Pruners by name. Values are 'module:Class' so listing names imports nothing heavy."""

from __future__ import annotations

import importlib

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.pruning.base import Pruner

PRUNERS: dict[str, str] = {
    "none": "fastdrivevla_ros.pruning.basic:NoPruner",
    "random": "fastdrivevla_ros.pruning.basic:RandomPruner",
    "mask_oracle": "fastdrivevla_ros.pruning.basic:MaskOraclePruner",
    "recon": "fastdrivevla_ros.pruning.recon:ReconPrunerScorer",
    "fastv": "fastdrivevla_ros.pruning.fastv:FastVPruner",
    "sparsevlm": "fastdrivevla_ros.pruning.sparsevlm:SparseVLMPruner",
    "vispruner": "fastdrivevla_ros.pruning.vispruner:VisPrunerPruner",
    "divprune": "fastdrivevla_ros.pruning.divprune:DivPrunePruner",
    "tfps": "fastdrivevla_ros.pruning.tfps:TFPSPruner",
    "vla_pruner": "fastdrivevla_ros.pruning.vla_pruner:VLAPruner",
}


def available_pruners() -> list[str]:
    return sorted(PRUNERS)


def pruner_class(name: str) -> type[Pruner]:
    if name not in PRUNERS:
        raise ConfigError(f"unknown pruner {name!r}; available: {', '.join(available_pruners())}")
    module, cls = PRUNERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_pruner(name: str, **options) -> Pruner:
    """Instantiate pruner `name`; `options` are its constructor arguments (e.g. weights=DIR)."""
    cls = pruner_class(name)
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(f"bad options for pruner {name!r}: {e}") from e
