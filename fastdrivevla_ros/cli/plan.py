"""`fastdrivevla plan`: plan one frame from image files with any model, pruner and ratio."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fastdrivevla_ros.cli.settings import add_settings, check_out_dir, resolve_settings
from fastdrivevla_ros.errors import ConfigError, InputError
from fastdrivevla_ros.files import write_text
from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory, EgoState
from fastdrivevla_ros.vla.settings import ENGINE_KEYS

# the engine's settings but cameras (--image gives them), and the warm-up (none by default:
# one plan, its one-off costs included, is what `plan` shows)
PLAN_SETTINGS = tuple(k for k in ENGINE_KEYS if k != "cameras") + ("warmup",)


def parse_image_args(items: list[str]) -> dict[str, np.ndarray]:
    """['CAM_FRONT=a.jpg', ...] -> {camera: RGB array}, checked as the engine checks them
    (before any model loads); a camera given twice is refused, not silently the last."""
    from fastdrivevla_ros.vla.inputs import as_rgb_array

    images = {}
    for item in items:
        cam, sep, path = item.partition("=")
        if not sep or cam not in CAMERAS:
            raise ConfigError(f"--image expects CAMERA=PATH with CAMERA in {list(CAMERAS)}, "
                              f"got {item!r}")
        if cam in images:
            raise ConfigError(f"--image {cam} is given twice; give each camera once")
        try:
            images[cam] = as_rgb_array(np.asarray(Image.open(path).convert("RGB")), cam)
        except (OSError, UnidentifiedImageError) as e:
            raise InputError(f"{cam}: cannot read image {path}: {e}") from e
    return images


def parse_history(text: str | None) -> EgoHistory | None:
    """'x,y,v;x,y,v;...' oldest first (current last), ego frame, metres and m/s."""
    if not text:
        return None
    states = []
    for part in text.split(";"):
        try:
            values = [float(v) for v in part.split(",")]
        except ValueError as e:
            raise ConfigError(f"--history: bad number in {part!r}") from e
        if len(values) not in (2, 3):
            raise ConfigError(f"--history entries are x,y or x,y,v; got {part!r}")
        states.append(EgoState(*values))
    return EgoHistory(states)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", action="append", default=[], metavar="CAMERA=PATH",
                   help="a camera image; repeat per camera (its cameras feed the model)")
    p.add_argument("--history", help="past ego states 'x,y[,v];...' oldest first, ego frame; "
                   "write --history=... when it starts with '-'")
    p.add_argument("--out", help="write plan.json and heatmaps here")
    p.add_argument("--list-pruners", action="store_true", help="list pruner names and exit")
    add_settings(p, PLAN_SETTINGS, presets={"warmup": 0}, help_overrides={
        "view_ratios": "per-camera pruning ratios, in the order of the --image cameras"})



def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.pruning.registry import available_pruners, require_pruning
    from fastdrivevla_ros.vla.engine import DrivingVLA
    from fastdrivevla_ros.vla.settings import engine_kwargs
    from fastdrivevla_ros.viz.heatmap import mosaic, save_png, token_overlay, with_legend

    if args.list_pruners:
        print("\n".join(available_pruners()))
        return 0
    images = parse_image_args(args.image)
    if not images:
        raise ConfigError("--model and at least one --image CAMERA=PATH are required")
    values = resolve_settings(args, PLAN_SETTINGS, given={"cameras": list(images)})
    if not values["model"]:
        raise ConfigError("--model and at least one --image CAMERA=PATH are required")
    kwargs = engine_kwargs(values)
    if values["untrained"]:
        print(f"note: pruner {values['pruner']!r} is UNTRAINED (random scores)", file=sys.stderr)
    history = parse_history(args.history)          # every argument checked before loading
    if args.out:
        check_out_dir(args.out)
    require_pruning(values["pruner"], values["pruning_ratio"], values["view_ratios"])
    engine = DrivingVLA.from_pretrained(values["model"], **kwargs)
    engine.warmup(values["warmup"])
    result = engine.plan(images, history)
    print(json.dumps({k: v for k, v in result.to_json().items() if k != "views"}, indent=1))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "plan.json", json.dumps(result.to_json(), indent=1))
        for view in result.views:
            save_png(with_legend(token_overlay(view), view.scores is not None),
                     out / f"heatmap_{view.camera}.png")
        save_png(with_legend(mosaic(result.views), any(v.scores is not None
                                                       for v in result.views)),
                 out / "mosaic.png")
    return 0 if result.ok else 1
