"""Pruners by name. Values are 'module:Class' so listing names imports nothing heavy."""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any, TYPE_CHECKING

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
    check_pruner(name, options)          # option names and types, before the constructor
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(f"bad options for pruner {name!r}: {e}") from e


def check_pruner(name: str, options: dict | None = None) -> None:
    """Raise ConfigError for an unknown pruner or options its constructor does not take,
    without building it (commands check this before loading a model)."""
    signature = inspect.signature(pruner_class(name))
    try:
        signature.bind(**(options or {}))
    except TypeError as e:
        accepted = ", ".join(signature.parameters) or "no options"
        raise ConfigError(f"bad options for pruner {name!r}: {e}; it takes: {accepted}") \
            from None
    for key, value in (options or {}).items():
        expected = signature.parameters[key].annotation
        if not _has_type(value, expected):
            raise ConfigError(f"pruner {name!r} option {key!r} must be {expected}, got "
                              f"{json.dumps(value)}")


# annotation name -> accepts(value); JSON has no int/bool distinction Python would respect
# (True == 1), so bools are refused where numbers are meant and vice versa
_SIMPLE = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "None": lambda v: v is None,
}


def _has_type(value, annotation) -> bool:
    """Whether `value` fits a constructor annotation (the string form: `int | None`,
    `tuple[int, ...]`); annotations this does not know are not checked."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if annotation is inspect.Parameter.empty or not text:
        return True
    for part in (p.strip() for p in text.split("|")):
        if part in _SIMPLE and _SIMPLE[part](value):
            return True
        if part.startswith(("tuple[", "list[")) and isinstance(value, (list, tuple)):
            inner = part[part.index("[") + 1:-1].split(",")[0].strip()
            if all(_has_type(v, inner) for v in value):
                return True
        if part not in _SIMPLE and not part.startswith(("tuple[", "list[")):
            return True
    return False


def require_pruning(name: str, ratio: float, view_ratios=None) -> None:
    """A pruner asked to prune nothing, or one that keeps every token asked to prune, is a
    mistake: the run would silently not be what was asked for."""
    if pruner_class(name).keeps_all and (ratio or any(view_ratios or ())):
        given = f"--pruning-ratio {ratio}" if ratio else f"per-view ratios {list(view_ratios)}"
        raise ConfigError(f"pruner {name!r} keeps every token, so {given} would be ignored; "
                          "choose a pruner (e.g. --pruner fastv) or drop the ratio")
    if not pruner_class(name).keeps_all and not ratio and not any(view_ratios or ()):
        raise ConfigError(f"pruner {name!r} with pruning ratio 0 and no per-view ratios prunes "
                          "nothing; give --pruning-ratio P (0 < P < 1), per-view ratios, or "
                          "--pruner none")


def pruner_options(name: str, options: dict | str | None = None, weights: str | None = None,
                   untrained: bool = False) -> dict[str, Any]:
    """Constructor options of pruner `name`, checked against its signature before anything loads.

    options: a dict or JSON object text of constructor arguments (e.g. '{"layer": 3}' for fastv,
    '{"important_ratio": 0.3}' for vispruner); weights / untrained: the explicit switch of a
    learned pruner (one whose constructor takes `untrained`, e.g. recon), which needs exactly
    one of them. The `plan` CLI and the drive node both build their options here.
    """
    if isinstance(options, str):
        try:
            options = json.loads(options) if options.strip() else {}
        except json.JSONDecodeError as e:
            raise ConfigError(f"pruner options for {name!r} are not valid JSON: {e}") from e
    if not isinstance(options or {}, dict):
        raise ConfigError(f"pruner options for {name!r} must be a JSON object, e.g. "
                          '{"layer": 3}')
    kwargs = dict(options or {})
    params = inspect.signature(pruner_class(name)).parameters
    learned = "untrained" in params
    if (weights or untrained) and not learned:
        learned_names = [n for n in available_pruners()
                         if "untrained" in inspect.signature(pruner_class(n)).parameters]
        raise ConfigError(f"pruner {name!r} is not learned: weights / untrained apply only to "
                          f"{', '.join(learned_names)}")
    if weights:
        if "weights" in kwargs:
            raise ConfigError(f"pruner {name!r}: weights given twice (options and weights)")
        kwargs["weights"] = str(weights)
    if untrained:
        kwargs["untrained"] = True
    if learned and bool(kwargs.get("weights")) == bool(kwargs.get("untrained")):
        raise ConfigError(f"pruner {name!r} is learned: give its trained weights "
                          "(pruner_weights / --pruner-weights DIR) or run it untrained with "
                          "random scores (untrained / --untrained, for tests and timing), "
                          "not both")
    check_pruner(name, kwargs)
    return kwargs
