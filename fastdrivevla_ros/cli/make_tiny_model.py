"""`fastdrivevla make-tiny-model DIR`: a random Qwen2.5-VL checkpoint (vla/tiny.py)."""

from __future__ import annotations

import argparse

from fastdrivevla_ros.vla.tiny import make_tiny_model, PRESET_DTYPES, PRESETS


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="directory to write the checkpoint into (created)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="'tiny' (tests, demo: ~80 MB, mostly the 151,936-row embedding and head), "
                        "'small' (larger CPU benchmark config) or '3b' (Qwen2.5-VL-3B-Instruct's "
                        "published shapes, 3.75 B parameters, ~7.5 GB in bfloat16: GPU timing)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    p.add_argument("--device", default="cpu",
                   help="where the weights are created and initialised: cpu, cuda, cuda:N, auto "
                        "(3b on a GPU never holds a float32 copy in host memory)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="weight dtype (default: " + ", ".join(
                       f"{k} {v}" for k, v in PRESET_DTYPES.items()) + ")")


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.vla.settings import check_setting, resolve_device

    device = resolve_device(check_setting("device", args.device))
    out = make_tiny_model(args.out_dir, args.preset, args.seed, device, args.dtype)
    print(f"wrote {args.preset} Qwen2.5-VL checkpoint to {out}")
    return 0
