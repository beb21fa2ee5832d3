"""`fastdrivevla report RUN...`: compare replay runs (eval/report.py): Table 1 + plots."""

from __future__ import annotations

import argparse

from fastdrivevla_ros.errors import ConfigError


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="replay run directories (each with metrics.json)")
    p.add_argument("--out", required=True, help="directory for report.md and plots")
    p.add_argument("--baseline", help="unpruned run directory for the Rel. column (shown "
                   "once, also when listed among the runs)")
    p.add_argument("--intersect", action="store_true",
                   help="runs scored on different samples: score every run on the samples "
                   "common to all (said in the table header) instead of refusing")
    p.add_argument("--own-samples", action="store_true",
                   help="score each run on its own samples, with a Samples column: the "
                   "per-settings folders of one ROS replay whose settings changed at runtime "
                   "(OUTPUT_DIR OUTPUT_DIR/*/)")


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.cli.settings import check_out_dir
    from fastdrivevla_ros.eval.report import compare

    check_out_dir(args.out)
    if args.intersect and args.own_samples:
        raise ConfigError("--intersect and --own-samples exclude each other")
    print(f"wrote {compare(args.runs, args.out, args.baseline, args.intersect, args.own_samples)}")
    return 0
