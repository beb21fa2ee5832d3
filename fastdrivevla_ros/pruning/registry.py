"""Pruners by name. Values are 'module:Class' so listing names imports nothing heavy."""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING

from fastdrivevla_ros.errors import ConfigError

if TYPE_CHECKING:       # listing names must not import torch (fast --help)
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


def check_pruner(name: str, options: dict | None = None) -> None:
    """Raise ConfigError for an unknown pruner or options its constructor does not take,
    without building it (commands check this before loading a model)."""
    cls = pruner_class(name)
    try:
        inspect.signature(cls).bind(**(options or {}))
    except TypeError as e:
        raise ConfigError(f"bad options for pruner {name!r}: {e}") from None


def require_pruning(name: str, ratio: float, view_ratios=None) -> None:
    """A pruner asked to prune nothing is a mistake, not a silent unpruned run."""
    if not pruner_class(name).keeps_all and not ratio and not any(view_ratios or ()):
        raise ConfigError(f"pruner {name!r} with pruning ratio 0 and no per-view ratios prunes "
                          "nothing; give --pruning-ratio P (0 < P < 1), per-view ratios, or "
                          "--pruner none")
