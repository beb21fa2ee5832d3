"""`fastdrivevla bench`: FLOPs, ms per stage and memory for pruners x ratios (paper Table 4),
or, with --scaling, unpruned prefill time/FLOPs vs number of visual tokens."""

from __future__ import annotations

import argparse
import json

from fastdrivevla_ros.cli.settings import add_settings, check_out_dir, resolve_settings
from fastdrivevla_ros.errors import ConfigError

# the bench sweeps pruners, ratios and views itself; these settings come from the schema
BENCH_SETTINGS = ("model", "device", "dtype", "attn_implementation", "max_pixels", "image_width",
                  "image_height", "forced_tokens", "decode_step", "max_new_tokens")


def parse_float_list(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from e


def parse_drafts(text: str) -> list[str]:
    """'oracle,wrong' -> ['oracle', 'wrong'] (checked)."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in ("oracle", "wrong")]
    if bad:
        raise ConfigError(f"--plan-drafts: {bad[0]!r} is not a draft kind (oracle, wrong)")
    return kinds


def parse_pruner_options(text: str | None) -> dict:
    """'{"recon": {"weights": "DIR"}}' -> {name: kwargs}."""
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--pruner-options is not valid JSON: {e}") from e
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise ConfigError('--pruner-options must map pruner names to option objects, e.g. '
                          '{"recon": {"weights": "runs/recon"}}')
    return options


def check_arguments(args: argparse.Namespace) -> list:
    """Every bench argument checked without the model; returns the scaling points."""
    from fastdrivevla_ros.bench.scaling import ScalingPoint

    if args.scaling:
        points = [ScalingPoint.parse(p) for p in args.scaling_points.split(",") if p.strip()]
        if not points:
            raise ConfigError("--scaling-points: no points given")
        return points
    from fastdrivevla_ros.bench.runner import check_bench

    pruners = [p.strip() for p in args.pruners.split(",") if p.strip()] if args.pruners \
        else None
    check_bench(pruners, parse_float_list(args.ratios, "--ratios"),
                parse_pruner_options(args.pruner_options),
                (args.plan_pruner or None) if args.decode_tokens is None else None,
                parse_float_list(args.plan_ratios, "--plan-ratios"), args.repeats,
                args.warmup, args.decode_tokens, args.threads)
    return []


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (bench.json, bench.md, plot)")
    p.add_argument("--pruners", help="comma-separated pruner names (default: all registered)")
    p.add_argument("--ratios", default="0,0.25,0.5,0.75",
                   help="pruning ratios; 0 (the unpruned baseline) is always measured")
    p.add_argument("--views", type=int, choices=[1, 6], default=1,
                   help="1 = CAM_FRONT (Impromptu-VLA), 6 = all nuScenes cameras")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (each runs every config)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up plans per config")
    p.add_argument("--decode-tokens", type=int,
                   help="instead of the real reply: exactly N greedy steps, grammar and stop "
                        "tokens off (fixed-length cost probe; no whole-plan table)")
    p.add_argument("--plan-pruner", default="recon",
                   help="pruner of the whole-plan table's pruned rows ('' = no table); recon "
                        "without --pruner-options weights is timed untrained")
    p.add_argument("--plan-ratios", default="0.5,0.75",
                   help="pruning ratios of the whole-plan table's pruned rows")
    p.add_argument("--plan-drafts", default="",
                   help="comma-separated draft kinds repeating each forced-tokens row of the "
                        "whole-plan table (speculative decoding, same reply): oracle = the "
                        "row's own reply as draft, wrong = every number wrong at its first "
                        "character ('' = none)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--pruner-options", help='JSON {pruner: {option: value}}, e.g. '
                                           '\'{"recon": {"weights": "runs/recon"}}\'')
    p.add_argument("--scaling", action="store_true",
                   help="instead: unpruned prefill ms/FLOPs vs visual tokens (scaling curve)")
    p.add_argument("--scaling-points", default="1:672x392,1:1008x1008,6:672x392,1:1596x1596",
                   help="with --scaling: VIEWS:WxH points (336, 1296, 6x336, 3249 tokens)")
    add_settings(p, BENCH_SETTINGS, required=("model",), help_overrides={
        "max_new_tokens": "reply budget; the real constrained reply is decoded (~140-170 "
                          "tokens)",
        "forced_tokens": "decode the pruner x ratio table with forced tokens "
                         "(--no-forced-tokens: step by step); the whole-plan table always "
                         "shows both",
        "attn_implementation": "attention kernel: sdpa counts attention FLOPs separately; "
                               "flash_attention_2's kernels are not seen by FlopCounterMode"})


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.bench.report import (bench_markdown, scaling_markdown, write_bench,
                                               write_scaling)

    from fastdrivevla_ros.vla.settings import image_size, resolve_device, resolve_dtype

    values = resolve_settings(args, BENCH_SETTINGS)
    if not values["model"]:
        raise ConfigError("--model is required (or a --config that sets model)")
    check_out_dir(args.out)
    points = check_arguments(args)                 # everything, before the model loads
    device = resolve_device(values["device"])
    common = dict(repeats=args.repeats, warmup=args.warmup, device=device,
                  dtype=resolve_dtype(values["dtype"], device),
                  attn_implementation=values["attn_implementation"], threads=args.threads)
    if args.scaling:
        from fastdrivevla_ros.bench.scaling import run_scaling

        doc = run_scaling(values["model"], points, **common)
        paths = write_scaling(doc, args.out)
        print(scaling_markdown(doc))
    else:
        from fastdrivevla_ros.bench.runner import run_bench

        pruners = [p.strip() for p in args.pruners.split(",") if p.strip()] if args.pruners \
            else None
        doc = run_bench(values["model"], pruners=pruners,
                        ratios=parse_float_list(args.ratios, "--ratios"), views=args.views,
                        max_pixels=values["max_pixels"], image_size=image_size(values),
                        decode_tokens=args.decode_tokens,
                        max_new_tokens=values["max_new_tokens"],
                        forced_tokens=values["forced_tokens"],
                        plan_pruner=args.plan_pruner or None,
                        plan_ratios=parse_float_list(args.plan_ratios, "--plan-ratios"),
                        plan_drafts=parse_drafts(args.plan_drafts),
                        decode_step=values["decode_step"],
                        pruner_options=parse_pruner_options(args.pruner_options), **common)
        paths = write_bench(doc, args.out)
        print(bench_markdown(doc))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
