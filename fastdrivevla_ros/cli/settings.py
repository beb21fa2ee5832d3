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
    return out


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
