"""`fastdrivevla search-budgets`: per-view token budgets by TPE (eval/budget_search.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.eval.budget_search import check_search, DEFAULT_LAMBDA, RATE_RANGE, \
    search_budgets, write_config, \
    write_search_json


def configure_parser(p: argparse.ArgumentParser) -> None:
    from fastdrivevla_ros.vla.prompt import CAMERAS

    p.add_argument("bag", help="validation bag written by `fastdrivevla convert`")
    p.add_argument("--model", required=True, help="Qwen2.5-VL checkpoint directory or hub id")
    p.add_argument("--pruner", default="tfps", help="pruner whose per-view budgets are searched")
    p.add_argument("--cameras", nargs="+", default=list(CAMERAS), help="views (one rate each)")
    p.add_argument("--trials", type=int, default=20, help="TPE trials (Prune2Drive: 1000)")
    p.add_argument("--lambda", dest="lam", type=float, default=DEFAULT_LAMBDA,
                   help="token penalty per unit of summed retention rate; the quality term "
                        "is -L2 / (the unpruned run's L2), so 0.03 trades a whole view for 3%% L2")
    p.add_argument("--seed", type=int, default=0, help="TPE sampler seed")
    p.add_argument("--limit", type=int, help="only the first N keyframes of the bag per trial")
    p.add_argument("--min-rate", type=float, default=RATE_RANGE[0],
                   help="lowest retention rate (kept share) a view may get")
    p.add_argument("--max-rate", type=float, default=RATE_RANGE[1],
                   help="highest retention rate a view may get")
    p.add_argument("--out", required=True, help="directory for trial runs and search.json")
    p.add_argument("--config-out", help="YAML to write (default OUT/view_budgets.yaml)")
    p.add_argument("--base-config", help="node YAML whose parameters the output starts from")
    p.add_argument("--max-pixels", type=int, default=512 * 512,
                   help="per-image pixel budget before the 28-px token grid")
    p.add_argument("--image-size", help="fixed resize WxH, e.g. 1596x1596 (3,249 tokens)")
    p.add_argument("--max-new-tokens", type=int, default=320, help="decode budget per plan")
    p.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=True,
                   help="grammar-constrained decoding (always a parseable plan)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="model weights dtype")
    p.add_argument("--attn-implementation", default="sdpa",
                   choices=["sdpa", "eager", "flash_attention_2"], help="attention kernel")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size must be WxH, got {text!r}") from None
    return w, h


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.vla.engine import DrivingVLA

    from fastdrivevla_ros.pipeline.params import load_parameter_file

    base = load_parameter_file(args.base_config) if args.base_config else None
    check_search(args.trials, args.lam, (args.min_rate, args.max_rate))
    from fastdrivevla_ros.data.bag_reader import BagFrames

    len(BagFrames(args.bag))          # a missing or broken bag fails before the model loads
    engine = DrivingVLA.from_pretrained(
        args.model, dtype=args.dtype, device=args.device,
        attn_implementation=args.attn_implementation, pruner=args.pruner,
        cameras=tuple(args.cameras), max_pixels=args.max_pixels,
        image_size=_parse_size(args.image_size), max_new_tokens=args.max_new_tokens,
        constrained=args.constrained)
    result = search_budgets(args.bag, engine, args.out, args.trials, args.lam, args.seed,
                            args.limit, (args.min_rate, args.max_rate),
                            progress=not args.no_progress)
    out = Path(args.out)
    write_search_json(result, out / "search.json")
    w, h = engine.settings.image_size or (0, 0)
    settings = {"model": str(args.model), "max_pixels": args.max_pixels, "image_width": w,
                "image_height": h}
    path = write_config(result, args.config_out or out / "view_budgets.yaml", args.pruner, base,
                        settings)
    rates = ", ".join(f"{c} {r:.2f}" for c, r in zip(result.cameras, result.best.rates))
    print(f"best of {len(result.trials)} trials: retention {rates}; objective "
          f"{result.best.objective:.4f} (L2 {result.best.l2_avg_m:.3f} m, unpruned "
          f"{result.reference_l2_m:.3f} m); wrote {path}")
    return 0
