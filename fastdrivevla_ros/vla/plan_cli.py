"""`fastdrivevla plan`: plan one frame from image files with any model, pruner and ratio."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fastdrivevla_ros.errors import ConfigError, InputError
from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory, EgoState


def parse_image_args(items: list[str]) -> dict[str, np.ndarray]:
    """['CAM_FRONT=a.jpg', ...] -> {camera: RGB array}, with clear errors."""
    images = {}
    for item in items:
        cam, sep, path = item.partition("=")
        if not sep or cam not in CAMERAS:
            raise ConfigError(f"--image expects CAMERA=PATH with CAMERA in {list(CAMERAS)}, "
                              f"got {item!r}")
        try:
            images[cam] = np.asarray(Image.open(path).convert("RGB"))
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
    p.add_argument("--model", help="Qwen2.5-VL checkpoint directory or hub id")
    p.add_argument("--image", action="append", default=[], metavar="CAMERA=PATH",
                   help="a camera image; repeat per camera (its cameras feed the model)")
    p.add_argument("--history", help="past ego states 'x,y[,v];...' oldest first, ego frame; "
                   "write --history=... when it starts with '-'")
    p.add_argument("--pruner", default="none",
                   help="pruner name (--list-pruners); needs --pruning-ratio > 0")
    p.add_argument("--pruner-weights", help="trained weights directory of a learned pruner "
                   "(recon)")
    p.add_argument("--untrained", action="store_true",
                   help="run a learned pruner (recon) without weights: random scores, for "
                        "smoke tests and timing only")
    p.add_argument("--pruner-options", metavar="JSON",
                   help='pruner constructor options as a JSON object, e.g. \'{"layer": 3}\' '
                        '(fastv) or \'{"important_ratio": 0.3}\' (vispruner)')
    p.add_argument("--pruning-ratio", type=float, default=0.0, help="fraction of tokens pruned")
    p.add_argument("--max-pixels", type=int, default=512 * 512, help="per-image pixel budget")
    p.add_argument("--image-size", help="fixed resize WxH, e.g. 1596x1596 (3,249 tokens)")
    p.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=True,
                   help="grammar-constrained decoding (always a well-formed plan)")
    p.add_argument("--forced-tokens", action=argparse.BooleanOptionalAction, default=True,
                   help="with --constrained: feed the tokens the reply format fixes along with "
                        "the free ones (--no-forced-tokens: decode every token step by step)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="model weights dtype")
    p.add_argument("--out", help="write plan.json and heatmaps here")
    p.add_argument("--list-pruners", action="store_true", help="list pruner names and exit")


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.pruning.registry import (
        available_pruners, pruner_options, require_pruning)
    from fastdrivevla_ros.vla.engine import DrivingVLA
    from fastdrivevla_ros.viz.heatmap import mosaic, save_png, token_overlay, with_legend

    if args.list_pruners:
        print("\n".join(available_pruners()))
        return 0
    if not args.model or not args.image:
        raise ConfigError("--model and at least one --image CAMERA=PATH are required")
    options = pruner_options(args.pruner, args.pruner_options, args.pruner_weights,
                             args.untrained)
    if args.untrained:
        print(f"note: pruner {args.pruner!r} is UNTRAINED (random scores)", file=sys.stderr)
    images = parse_image_args(args.image)
    size = None
    if args.image_size:
        try:
            size = tuple(int(v) for v in args.image_size.lower().split("x"))
        except ValueError as e:
            raise ConfigError(f"--image-size must be WxH, got {args.image_size!r}") from e
    history = parse_history(args.history)          # every argument checked before loading
    require_pruning(args.pruner, args.pruning_ratio)
    engine = DrivingVLA.from_pretrained(
        args.model, dtype=args.dtype, device=args.device, pruner=args.pruner,
        pruner_options=options,
        cameras=tuple(images), max_pixels=args.max_pixels, image_size=size,
        pruning_ratio=args.pruning_ratio, constrained=args.constrained,
        forced_tokens=args.forced_tokens)
    result = engine.plan(images, history)
    print(json.dumps({k: v for k, v in result.to_json().items() if k != "views"}, indent=1))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan.json").write_text(json.dumps(result.to_json(), indent=1))
        for view in result.views:
            save_png(with_legend(token_overlay(view), view.scores is not None),
                     out / f"heatmap_{view.camera}.png")
        save_png(with_legend(mosaic(result.views), any(v.scores is not None
                                                       for v in result.views)),
                 out / "mosaic.png")
    return 0 if result.ok else 1
