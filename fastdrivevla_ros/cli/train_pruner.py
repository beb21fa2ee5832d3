"""`fastdrivevla train-pruner`: AFBR training of ReconPruner (see training/trainer.py).

    fastdrivevla train-pruner --model DIR --data DIR --out DIR [--masks DIR ...]
    accelerate launch -m fastdrivevla_ros.cli train-pruner ...     # several GPUs, same flags
"""

from __future__ import annotations

import argparse
import json

from fastdrivevla_ros.cli.settings import add_settings, check_out_dir, resolve_settings
from fastdrivevla_ros.errors import ConfigError, require_extra

TRAIN_SETTINGS = ("model", "max_pixels", "image_width", "image_height")


def configure_parser(p: argparse.ArgumentParser) -> None:
    from fastdrivevla_ros.data.splits import SPLITS
    from fastdrivevla_ros.training import MODES
    p.add_argument("--data", required=True, help="folder of images (or a nuScenes dataroot: "
                   "its samples/ are used)")
    p.add_argument("--masks", action="append", default=None, metavar="DIR",
                   help="mask folder(s): MASKS/<image path relative to DATA, .jpg replaced "
                   "by .png>, nonzero = foreground; repeat to OR several (default: DATA/masks)")
    p.add_argument("--out", required=True, help="output ReconPruner directory (resumes if it "
                   "holds checkpoints)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training images")
    p.add_argument("--max-steps", type=int, default=None,
                   help="total optimizer steps (overrides --epochs for the schedule)")
    p.add_argument("--until-step", type=int, default=None,
                   help="stop at this step and keep the state (resume later with the same flags)")
    p.add_argument("--batch-size", type=int, default=4, help="images per process and step")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="batches accumulated per optimizer step")
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (cosine schedule)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="linear learning-rate warm-up steps")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="0 disables clipping")
    p.add_argument("--mode", choices=MODES, default="afbr",
                   help="afbr (the method); ablations of the paper's Table 2: foreground_only "
                   "(pixel reconstruction without the background branch), mask_prediction "
                   "(scores trained on the mask directly)")
    p.add_argument("--lam", type=float, default=0.2, help="SSIM weight λ in Eq. 7")
    p.add_argument("--alpha", type=float, default=0.5, help="foreground weight α in Eq. 8")
    p.add_argument("--padding", choices=("zero", "learned"), default="learned",
                   help="what replaces the tokens a branch does not get (Eq. 5): a learned "
                   "padding token (default; MAE's mask token) or zeros (the paper's wording; its "
                   "straight-through gradient is uninformative behind RMSNorm, see afbr.py)")
    p.add_argument("--decoder-warmup-steps", type=int, default=200,
                   help="first optimizer steps train only the decoder, on random token splits, "
                   "so it reconstructs exactly the tokens it gets before the scorer learns "
                   "(counted in --max-steps; added to --epochs' steps)")
    p.add_argument("--decoder-lr-scale", type=float, default=0.1,
                   help="decoder learning rate / scorer learning rate after the warm-up (a slower "
                   "decoder cannot take over the scorer's job)")
    p.add_argument("--decoder-layers", type=int, default=6,
                   help="transformer layers of the reconstruction decoder")
    p.add_argument("--decoder-init", choices=("vla", "random"), default="vla",
                   help="initialise the decoder layers from the VLA's first LLM layers")
    p.add_argument("--init-layer", type=int, default=0,
                   help="LLM layer that initialises the PrunerLayer")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint interval (steps)")
    p.add_argument("--keep-checkpoints", type=int, default=2,
                   help="newest checkpoints kept on disk")
    p.add_argument("--log-every", type=int, default=10,
                   help="steps between train_log.jsonl lines")
    p.add_argument("--split", choices=SPLITS, default=None,
                   help="official nuScenes split to train on (nuscenes-devkit "
                   "create_splits_scenes; --data must be the dataroot); default: every scene "
                   "in --data except the val split")
    p.add_argument("--scenes", nargs="+", default=(), metavar="NAME",
                   help="nuScenes scene names to train on (with --split: each must be in it)")
    p.add_argument("--allow-val", action="store_true",
                   help="allow images of val scenes, which replay evaluates (refused otherwise: "
                   "training on them leaks into the evaluation)")
    p.add_argument("--nuscenes-version", default=None, metavar="VERSION",
                   help="table folder in --data, e.g. v1.0-trainval (default: the only one)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="held-out share of the training scenes (whole scenes; whole images for "
                   "non-nuScenes data) for the final foreground-coverage check in eval.json")
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, init)")
    p.add_argument("--no-resume", action="store_true",
                   help="ignore existing checkpoints in --out")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no",
                   help="accelerate mixed precision")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="dtype the VLA (vision encoder) is loaded in")
    p.add_argument("--feature-cache", default=None, metavar="DIR",
                   help="cache the frozen encoder's tokens here (safetensors per image)")
    p.add_argument("--num-workers", type=int, default=0, help="data loader workers")
    p.add_argument("--previews", type=int, default=4, metavar="N",
                   help="at every checkpoint, draw N images (held-out first) as image | mask | "
                   "kept tokens | both reconstructions into OUT/previews/step-N.png; 0: none")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # the VLA and its input resolution: train at what the node and `replay --config` run
    add_settings(p, TRAIN_SETTINGS, required=("model",), help_overrides={
        "model": "the VLA (Qwen2.5-VL checkpoint dir or hub id) whose vision encoder feeds the "
                 "pruner and whose LLM layers initialise it",
        "max_pixels": "training resolution cap (the VLA's max_pixels)"})


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    for module in ("accelerate", "pytorch_msssim", "nuscenes"):
        require_extra(module, "train", "fastdrivevla train-pruner")

    from fastdrivevla_ros.training.trainer import TrainConfig, train
    from fastdrivevla_ros.vla.settings import image_size

    values = resolve_settings(args, TRAIN_SETTINGS)
    if not values["model"]:
        raise ConfigError("--model is required (or a --config that sets model)")
    check_out_dir(args.out)
    # flags are named after TrainConfig fields; the schema's and the negative switches mapped
    special = {"masks": tuple(args.masks or ()), "resume": not args.no_resume,
               "progress": not args.no_progress, "model": values["model"],
               "max_pixels": values["max_pixels"], "image_size": image_size(values)}
    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
               if f.name not in special and hasattr(args, f.name)}
    summary = train(TrainConfig(**options, **special))
    print(json.dumps(summary, indent=2))
    return 0
