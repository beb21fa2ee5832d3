"""`fastdrivevla make-tiny-model DIR`: a tiny random Qwen2.5-VL checkpoint (vla/tiny.py)."""

from __future__ import annotations

import argparse

from fastdrivevla_ros.vla.tiny import make_tiny_model, PRESETS


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="directory to write the checkpoint into (created)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="'tiny' (tests, demo: ~80 MB, mostly the 151,936-row embedding and head) or "
                        "'small' (larger CPU benchmark config)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")


def run(args: argparse.Namespace) -> int:
    out = make_tiny_model(args.out_dir, args.preset, args.seed)
    print(f"wrote {args.preset} Qwen2.5-VL checkpoint to {out}")
    return 0
