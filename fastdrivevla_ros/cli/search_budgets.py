"""`fastdrivevla search-budgets`: per-view token budgets by TPE (eval/budget_search.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastdrivevla_ros.cli.settings import add_settings, check_out_dir, resolve_settings, \
    yaml_values
from fastdrivevla_ros.errors import ConfigError, require_extra
from fastdrivevla_ros.eval.budget_search import check_search, check_search_folder, \
    DEFAULT_LAMBDA, RATE_RANGE, search_budgets, search_settings, write_config, write_search_json


def configure_parser(p: argparse.ArgumentParser) -> None:
    from fastdrivevla_ros.vla.prompt import CAMERAS
    from fastdrivevla_ros.vla.settings import ENGINE_KEYS

    p.add_argument("bag", help="validation bag written by `fastdrivevla convert`")
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
    p.add_argument("--config-out", help="YAML to write (default OUT/view_budgets.yaml): "
                   "--config's parameters, the settings searched with and the budgets found")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings(p, ENGINE_KEYS, required=("model",), config_aliases=("--base-config",),
                 presets={"pruner": "tfps", "cameras": tuple(CAMERAS)}, help_overrides={
                     "pruner": "pruner whose per-view budgets are searched",
                     "cameras": "views, one retention rate each (nuScenes channel names)"})


def run(args: argparse.Namespace) -> int:
    require_extra("optuna", "search", "fastdrivevla search-budgets")
    from fastdrivevla_ros.data.bag_reader import BagFrames
    from fastdrivevla_ros.vla.engine import DrivingVLA
    from fastdrivevla_ros.vla.settings import engine_kwargs, ENGINE_KEYS

    values = resolve_settings(args, ENGINE_KEYS)
    if not values["model"]:
        raise ConfigError("--model is required (or a --config that sets model)")
    check_search(args.trials, args.lam, (args.min_rate, args.max_rate), args.limit)
    from fastdrivevla_ros.pruning.registry import pruner_class

    if pruner_class(values["pruner"]).keeps_all:
        raise ConfigError(f"pruner {values['pruner']!r} keeps every token: there are no budgets "
                          "to search; give --pruner (e.g. tfps)")
    len(BagFrames(args.bag))          # a missing or broken bag fails before the model loads
    check_out_dir(args.out)
    check_search_folder(args.out, search_settings(           # so does a foreign --out
        args.bag, values["cameras"], args.lam, args.seed, args.limit,
        (args.min_rate, args.max_rate)))
    engine = DrivingVLA.from_pretrained(values["model"], **engine_kwargs(values))
    result = search_budgets(args.bag, engine, args.out, args.trials, args.lam, args.seed,
                            args.limit, (args.min_rate, args.max_rate),
                            progress=not args.no_progress, model=values["model"])
    out = Path(args.out)
    write_search_json(result, out / "search.json")
    path = write_budgets(result, values, args.config, args.config_out or out / "view_budgets.yaml")
    rates = ", ".join(f"{c} {r:.2f}" for c, r in zip(result.cameras, result.best.rates))
    print(f"best of {len(result.trials)} trials: retention {rates}; objective "
          f"{result.best.objective:.4f} (L2 {result.best.l2_avg_m:.3f} m, unpruned "
          f"{result.reference_l2_m:.3f} m); wrote {path}")
    return 0


def write_budgets(result, values: dict, config, path) -> Path:
    """
    The node YAML of a search: --config's parameters, the settings searched with, the budgets.

    Every planner setting is written, so the file alone reproduces the run in the node and in
    `replay --config`.
    """
    from fastdrivevla_ros.vla.settings import ENGINE_KEYS, load_parameter_file

    base = load_parameter_file(config) if config else None
    return write_config(result, path, values["pruner"], base, yaml_values(values, ENGINE_KEYS))
