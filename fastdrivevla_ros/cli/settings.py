"""Flags and `--config YAML` of every command, generated from the settings schema.

Each command names the settings it takes (vla/settings.py: ENGINE_KEYS, ...); this module adds
one flag per setting with the schema's description and default, plus `--config YAML` (a ROS 2
parameter file: config/drive.yaml, or what `search-budgets` writes). A value comes from its
flag, else the YAML, else the schema, and is checked exactly as the drive node checks it.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastdrivevla_ros.errors import ConfigError

IMAGE_SIZE = ("image_width", "image_height")   # one CLI flag: --image-size WxH


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings(p: argparse.ArgumentParser, names, *, required=(), help_overrides=None,
                 presets=None, config_aliases=()) -> None:
    """
    Add `--config` and a flag per setting in `names` (defaults None: "not given").

    presets: the command's own starting values (e.g. search-budgets searches tfps budgets
    over six views), below --config and flags; everything else starts at the schema default.
    """
    from fastdrivevla_ros.vla.settings import SPECS

    presets = dict(presets or {})
    p.set_defaults(_presets=presets)

    group = p.add_argument_group("settings", "each flag overrides --config YAML, which "
                                 "overrides the default shown")
    group.add_argument("--config", *config_aliases, dest="config", metavar="YAML",
                       help="ROS 2 parameter file, e.g. config/drive.yaml or the output of "
                       "`fastdrivevla search-budgets`: its settings apply unless a flag is "
                       "given (the node's other parameters are checked, then ignored)")
    for name in names:
        if name == "image_height":
            continue
        if name == "image_width":
            group.add_argument("--image-size", metavar="WxH",
                               help="fixed resize instead of --max-pixels, e.g. 1596x1596 "
                               "(3,249 tokens) (default: keep the aspect)")
            continue
        spec = SPECS[name]
        text = (help_overrides or {}).get(name, spec.description)
        default = "required" if name in required else _shown(presets.get(name, spec.default))
        kw: dict[str, Any] = {"default": None, "help": f"{text} (default: {default})"}
        kind = spec.kind
        if kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif kind in ("int", "float"):
            kw.update(type=int if kind == "int" else float, metavar="N")
        elif kind in ("str_list", "float_list"):
            kw.update(nargs="+", metavar="V")
            if kind == "float_list":
                kw["type"] = float
        else:
            choices = spec.allowed_choices()
            if choices:
                kw.update(choices=choices, metavar="NAME")
                kw["help"] += f"; one of: {', '.join(choices)}"
        group.add_argument(flag(name), **kw)


def _shown(default) -> str:
    if isinstance(default, (tuple, list)):
        return " ".join(str(v) for v in default)
    if default in ("", None):
        return "none"
    return str(default)


def resolve_settings(args: argparse.Namespace, names, given=None) -> dict[str, Any]:
    """
    Every setting's value: flag, else --config YAML, else the command's preset, else the
    schema's default; all checked.

    given: values the command itself takes from elsewhere (plan: cameras from --image).
    Raises ConfigError naming each problem (an unknown YAML key too, with the closest name).
    """
    from fastdrivevla_ros.vla.settings import check_values, load_parameter_file, SPECS

    values = dict(getattr(args, "_presets", None) or {})
    if getattr(args, "config", None):
        values.update(load_parameter_file(args.config))
    for name in names:
        flag_value = getattr(args, name, None)
        if isinstance(flag_value, list) and SPECS[name].kind == "str_list":
            # list flags take values separated by spaces or commas
            flag_value = [part for item in flag_value for part in item.split(",") if part]
        if flag_value is not None:
            values[name] = flag_value
    if "image_width" in names and getattr(args, "image_size", None):
        values["image_width"], values["image_height"] = parse_size(args.image_size)
    out, problems = check_values(values | dict(given or {}))
    if problems:
        where = f" ({args.config})" if getattr(args, "config", None) else ""
        raise ConfigError(f"invalid settings{where}: " + "; ".join(problems))
    if "pruner" in names:
        _unused_ratios(args, out)
        _check_pruner_builds(out)
    if "device" in names:
        _check_runtime(out)
    if out.get("model"):
        check_model(out["model"])
    return out


def check_out_dir(out, flag: str = "--out") -> None:
    """An output directory that can be written: not a file, its nearest existing folder
    writable (checked before anything loads; a read-only disk still fails on write)."""
    import os
    from pathlib import Path

    path = Path(str(out)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {out} is a file; give a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {out}: {parent} is not writable; choose another place")


def check_model(model: str) -> None:
    """A local checkpoint folder is checked (config, weights' headers, tokenizer) before it
    loads; anything else must look like a hub id (org/name) and, offline by default
    (HF_HUB_OFFLINE, set by `fastdrivevla` unless given), be in the local hub cache."""
    import os
    from pathlib import Path

    from fastdrivevla_ros.vla.loading import cached_hub_snapshot, check_local_checkpoint

    path = Path(str(model)).expanduser()
    if path.is_dir():
        check_local_checkpoint(path)
        return
    if path.exists() or str(model).startswith(("/", ".", "~")) or str(model).count("/") != 1:
        raise ConfigError(f"--model {model}: no such checkpoint directory (a hub id looks "
                          "like org/name)")
    offline = os.environ.get("HF_HUB_OFFLINE", "1").lower() not in ("0", "false", "no", "off")
    if offline and cached_hub_snapshot(model) is None:
        raise ConfigError(f"--model {model}: not a local directory, and not in the local "
                          "Hugging Face cache; fastdrivevla works offline by default (set "
                          "HF_HUB_OFFLINE=0 to download it from the hub)")


def _check_pruner_builds(values: dict[str, Any]) -> None:
    """Build the pruner once, without a model: its own checks of option values (FastV's
    layer >= 1 ...) and of its weights (--pruner-weights) run before any model loads."""
    from pathlib import Path

    from fastdrivevla_ros.pruning.registry import build_pruner
    from fastdrivevla_ros.vla.settings import pruner_options_of

    weights = values.get("pruner_weights")
    if weights and not Path(weights).expanduser().is_dir():
        raise ConfigError(f"--pruner-weights {weights}: no such file or directory (give the "
                          "folder `fastdrivevla train-pruner` wrote)")
    build_pruner(values["pruner"], **pruner_options_of(values))


def _check_runtime(values: dict[str, Any]) -> None:
    """--device and --attn-implementation this machine's torch can run (before loading)."""
    import importlib.util

    import torch

    device = str(values["device"])
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA "
                          "GPU; use --device cpu (or auto)")
    if device.startswith("cuda:") and device[5:].isdigit() and \
            int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if values.get("attn_implementation") == "flash_attention_2" and \
            importlib.util.find_spec("flash_attn") is None:
        raise ConfigError("--attn-implementation flash_attention_2 needs the flash-attn "
                          "package (pip install flash-attn, CUDA only); use sdpa")


def _unused_ratios(args: argparse.Namespace, values: dict[str, Any]) -> None:
    """A pruner that keeps every token (none) with pruning ratios: ratios given with it are a
    contradiction (refused: the run would not be what was asked for); a --pruner flag over a
    --config's ratios is a deliberate unpruned baseline of that config (noted, ratios unset)."""
    import sys

    from fastdrivevla_ros.pruning.registry import pruner_class

    ratios = {k: values[k] for k in ("pruning_ratio", "view_ratios")
              if values.get(k) and any(v for v in ([values[k]] if k == "pruning_ratio"
                                                   else values[k]))}
    if not ratios or not pruner_class(values["pruner"]).keeps_all:
        return
    given = "; ".join(f"{flag(k)} {v}" for k, v in ratios.items())
    if getattr(args, "pruner", None) is None or any(getattr(args, k, None) is not None
                                                    for k in ratios):
        raise ConfigError(f"pruner {values['pruner']!r} keeps every token, so {given} would "
                          "be ignored; choose a pruner (e.g. --pruner fastv) or drop the ratio")
    print(f"note: --pruner {values['pruner']} keeps every token; {args.config}'s {given} "
          "are not used", file=sys.stderr)
    values["pruning_ratio"], values["view_ratios"] = 0.0, None


def yaml_values(values: dict[str, Any], names) -> dict[str, Any]:
    """`names`' values as a ROS 2 parameter file holds them (lists, no unset ones)."""
    return {k: list(values[k]) if isinstance(values[k], tuple) else values[k]
            for k in names if values[k] is not None}


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'1596x1596' -> (1596, 1596); None or '' -> None."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size must be WxH, e.g. 1596x1596, got {text!r}") from None
    return w, h
