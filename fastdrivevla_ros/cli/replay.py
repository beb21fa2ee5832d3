"""`fastdrivevla replay BAG --out RUN`: the command line of eval/replay.py.

Every setting is resolved and checked HERE, in one place, before anything is loaded: flags
override `--config YAML` (a node parameter file, e.g. what `search-budgets` writes), which
overrides the schema's defaults (cli/settings.py). Then the bag's index is read and the run
folder's manifest compared, so a mistake costs seconds, not a model load.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from fastdrivevla_ros.cli.settings import add_settings, check_out_dir, resolve_settings
from fastdrivevla_ros.errors import ConfigError


def configure_parser(p: argparse.ArgumentParser) -> None:
    from fastdrivevla_ros.eval.metrics import CONVENTIONS, DEFAULT_CONVENTION
    from fastdrivevla_ros.vla.settings import ENGINE_KEYS

    p.add_argument("bag", help="bag directory written by `fastdrivevla convert`")
    p.add_argument("--out", required=True, help="run directory; resumed if it holds the same "
                   "run (same settings), refused if it holds another")
    p.add_argument("--shard", default="0/1", metavar="i/n",
                   help="evaluate shard i of n (0-based), e.g. 1/4; join with `merge`")
    p.add_argument("--limit", type=int, metavar="N",
                   help="only the first N keyframes of the shard (a tiny-model replay costs "
                   "about 1.2 s per keyframe with six cameras on a 2-core CPU)")
    p.add_argument("--ground-truth-as-prediction", action="store_true",
                   help="self-check: evaluate the bag's own GT futures (no model needed)")
    p.add_argument("--baseline", metavar="RUN",
                   help="unpruned run directory for the Rel. column of report.md")
    p.add_argument("--convention", default=DEFAULT_CONVENTION, choices=sorted(CONVENTIONS),
                   help="metric convention of the headline numbers (metrics.json has all)")
    p.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                   help="on an unusable keyframe: stop, or record it as an error and go on")
    p.add_argument("--output-bag", action="store_true",
                   help="also write predictions_bag/ (paths + heatmaps) for Foxglove / RViz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings(p, ENGINE_KEYS + ("warmup",), config_aliases=("--budgets",), help_overrides={
        "model": "Qwen2.5-VL checkpoint directory or hub id (safetensors only); required "
                 "unless --ground-truth-as-prediction or --config sets it"})


@dataclass
class ReplayConfig:
    """Resolved, checked replay settings (nothing loaded yet)."""

    shard: tuple[int, int]
    model: str | None
    engine: dict = field(default_factory=dict)      # DrivingVLA.from_pretrained keywords
    pruner_options: dict = field(default_factory=dict)
    warmup: int = 0                                 # blank plans before the first keyframe


def resolve(args: argparse.Namespace) -> ReplayConfig:
    """Flags > --config YAML > schema defaults; every value checked; raises ConfigError."""
    from fastdrivevla_ros.vla.settings import engine_kwargs, ENGINE_KEYS

    shard = parse_shard(args.shard)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.baseline:
        _check_baseline(args.baseline)
    values = resolve_settings(args, ENGINE_KEYS + ("warmup",))
    if args.ground_truth_as_prediction:
        return ReplayConfig(shard, values["model"] or None)
    if not values["model"]:
        raise ConfigError("--model is required (or --ground-truth-as-prediction)")
    engine = engine_kwargs(values)
    _check_engine(engine)
    return ReplayConfig(shard, values["model"], engine, engine["pruner_options"],
                        values["warmup"])


def _check_baseline(run_dir) -> None:
    """The Rel. column's run must be a finished replay (metrics and predictions)."""
    from fastdrivevla_ros.eval.report import load_metrics
    from fastdrivevla_ros.eval.store import PREDICTIONS

    load_metrics(run_dir)
    if not (Path(run_dir) / PREDICTIONS).is_file():
        raise ConfigError(f"--baseline {run_dir}: no {PREDICTIONS}; not a replay run directory")


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0-based i < n) -> (i, n)."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _check_engine(kw: dict) -> None:
    """What DrivingVLA.from_pretrained would reject, checked without loading a model."""
    from fastdrivevla_ros.pruning.registry import require_pruning

    require_pruning(kw["pruner"], kw["pruning_ratio"], kw["view_ratios"])
    planner_settings(kw)


def planner_settings(kw: dict):
    """The PlannerSettings DrivingVLA.from_pretrained(**kw) would build (checked)."""
    from fastdrivevla_ros.vla.engine import PlannerSettings

    return PlannerSettings(**{k: v for k, v in kw.items() if k not in LOAD_KEYS})


# from_pretrained keywords that load the model rather than configure the planner
LOAD_KEYS = ("dtype", "device", "attn_implementation", "pruner", "pruner_options")


def planned_manifest(bag, cfg: ReplayConfig, gt_mode: bool) -> dict:
    """The manifest replay_bag will write for `cfg`, known before the model is loaded."""
    from fastdrivevla_ros.eval.replay import run_manifest
    from fastdrivevla_ros.pruning.registry import pruner_class
    if gt_mode:
        return run_manifest(bag, cfg.shard, model=cfg.model or "")
    kw = cfg.engine
    pruner = pruner_class(kw["pruner"])
    settings = planner_settings(kw)
    return run_manifest(bag, cfg.shard, model=cfg.model, dtype=kw["dtype"], pruner=pruner.name,
                        keeps_all=pruner.keeps_all, settings=settings,
                        pruner_options=cfg.pruner_options)


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.data.bag_reader import BagFrames
    from fastdrivevla_ros.eval.replay import replay_bag
    from fastdrivevla_ros.eval.run_folder import check_not_busy, check_resumable
    from fastdrivevla_ros.eval.store import headline

    cfg = resolve(args)
    check_out_dir(args.out)
    len(BagFrames(args.bag))                       # a missing or broken bag fails now
    check_not_busy(args.out)
    check_resumable(args.out, planned_manifest(args.bag, cfg, args.ground_truth_as_prediction))
    engine = None
    if not args.ground_truth_as_prediction:
        from fastdrivevla_ros.vla.engine import DrivingVLA

        engine = DrivingVLA.from_pretrained(cfg.model, **cfg.engine)
        engine.warmup(cfg.warmup)               # keyframe timings exclude one-off costs
    metrics = replay_bag(args.bag, engine, args.out, cfg.shard, args.limit,
                         gt_as_prediction=args.ground_truth_as_prediction,
                         name=args.convention, baseline=args.baseline,
                         output_bag=args.output_bag, model=cfg.model or "",
                         pruner_options=cfg.pruner_options, on_error=args.on_error,
                         progress=not args.no_progress)
    print(headline(metrics, args.out))
    return 0
