"""`fastdrivevla sweep BAG... --pruners a,b --ratios 0.5,0.75 --out SWEEP` (eval/sweep.py).

Every setting is resolved and checked here, and every existing run folder compared with what
it would hold, before Ray starts or a model loads.
"""

from __future__ import annotations

import argparse
import json

from fastdrivevla_ros.cli.settings import add_settings, check_out_dir, resolve_settings
from fastdrivevla_ros.errors import ConfigError

# chosen per setting by --pruners / --ratios / --options instead of one value for the run
PER_SETTING = ("pruner", "pruning_ratio", "pruner_options", "pruner_weights", "untrained")


def configure_parser(p: argparse.ArgumentParser) -> None:
    from fastdrivevla_ros.eval.metrics import CONVENTIONS, DEFAULT_CONVENTION
    from fastdrivevla_ros.vla.settings import ENGINE_KEYS

    p.add_argument("bags", nargs="+", metavar="BAG",
                   help="bag directories written by `fastdrivevla convert` (distinct names)")
    p.add_argument("--out", required=True, help="sweep directory: a run folder per setting "
                   "and bag (SWEEP/<setting>/<bag>/), report.md and plots; rerunning the same "
                   "command skips finished folders")
    p.add_argument("--pruners", required=True, metavar="A,B",
                   help="pruners to compare, comma-separated (`none`, the baseline, is always "
                   "run once)")
    p.add_argument("--ratios", metavar="R,S",
                   help="pruning ratios in (0, 1), comma-separated, each run with every "
                   "pruner that prunes")
    p.add_argument("--options", action="append", metavar="PRUNER=JSON",
                   help="constructor options of one pruner as `plan --pruner-options` takes "
                   "them, e.g. fastv='{\"layer\": 3}' or recon='{\"weights\": \"DIR\"}'; "
                   "repeat per pruner")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N keyframes of "
                   "each bag")
    p.add_argument("--address", metavar="auto|HOST:PORT",
                   help="join a running Ray cluster (`ray start --head`); default: start a "
                   "local Ray on this machine, loopback only")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="Ray actors, each loading the model once (one CPU each)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="GPUs per worker (e.g. 1, or 0.5 to share one); > 0 runs on CUDA "
                   "(default: 0, CPU)")
    p.add_argument("--threads-per-worker", type=int, default=1, metavar="N",
                   help="torch intra-op threads per worker (CPU runs)")
    p.add_argument("--convention", default=DEFAULT_CONVENTION, choices=sorted(CONVENTIONS),
                   help="metric convention of the headline numbers")
    p.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                   help="on an unusable keyframe: fail its task, or record it and go on")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings(p, [k for k in ENGINE_KEYS if k not in PER_SETTING])


def parse_options(items: list[str]) -> dict[str, dict]:
    """['fastv={"layer": 3}', ...] -> {pruner: checked constructor options}."""
    from fastdrivevla_ros.pruning.registry import pruner_options

    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--options expects PRUNER=JSON, got {item!r}")
        out[name] = pruner_options(name, text)
    return out


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--ratios must be numbers separated by commas, got {text!r}") from None


def resolve(args: argparse.Namespace):
    """Flags > --config YAML > schema -> (settings grid, tasks, SweepSpec); all checked."""
    from fastdrivevla_ros.eval.sweep import grid, SweepSpec, tasks
    from fastdrivevla_ros.vla.settings import engine_kwargs, ENGINE_KEYS

    for flag, value in (("--limit", args.limit), ("--workers", args.workers),
                        ("--threads-per-worker", args.threads_per_worker)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.gpus_per_worker < 0:
        raise ConfigError(f"--gpus-per-worker must be >= 0, got {args.gpus_per_worker}")
    values = resolve_settings(args, [k for k in ENGINE_KEYS if k not in PER_SETTING])
    if not values["model"]:
        raise ConfigError("--model is required (or --config setting it)")
    check_out_dir(args.out)
    if args.gpus_per_worker and values["device"] == "auto":
        values["device"] = "cuda"        # resolved for the workers' GPUs, not this machine's
    pruners = [p.strip() for p in args.pruners.split(",") if p.strip()]
    settings = grid(pruners, _floats(args.ratios or ""), parse_options(args.options or []))
    engine = engine_kwargs(values | {"pruner": "none", "pruner_options": "",
                                     "pruner_weights": "", "untrained": False})
    engine.pop("pruner"), engine.pop("pruner_options")
    spec = SweepSpec(values["model"], engine, args.limit, args.convention, args.on_error)
    return settings, tasks(settings, args.bags, args.out), spec


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.data.bag_reader import BagFrames
    from fastdrivevla_ros.eval.sweep import import_ray, run_sweep, write_sweep_report

    settings, task_list, spec = resolve(args)
    for bag in args.bags:
        len(BagFrames(bag))                      # a missing or broken bag fails now
    import_ray()                                 # not installed: one line, before any work
    state = run_sweep(task_list, spec, workers=args.workers,
                      gpus_per_worker=args.gpus_per_worker, threads=args.threads_per_worker,
                      address=args.address, progress=not args.no_progress)
    report = write_sweep_report(args.out, settings, task_list, spec.convention)
    print(json.dumps({"tasks": state.total, "skipped": state.skipped, "done": state.done,
                      "failed": len(state.failed), "keyframes_planned": state.planned,
                      "worker_processes": len(state.workers),
                      "model_loads": sum(w["loads"] for w in state.workers.values()),
                      "report": str(report) if report else None}))
    if state.failed:
        from fastdrivevla_ros.errors import DataError

        first = next(iter(state.failed.items()))
        raise DataError(f"{len(state.failed)} task(s) failed, e.g. {first[0]}: {first[1]}; "
                        "rerun the same command to retry them")
    return 0
