"""`fastdrivevla report RUN...`: compare replay runs (eval/report.py): Table 1 + plots."""

from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="replay run directories (each with metrics.json)")
    p.add_argument("--out", required=True, help="directory for report.md and plots")
    p.add_argument("--baseline", help="unpruned run directory for the Rel. column (shown "
                   "once, also when listed among the runs)")
    p.add_argument("--intersect", action="store_true",
                   help="runs scored on different samples: score every run on the samples "
                   "common to all (said in the table header) instead of refusing")


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.cli.settings import check_out_dir
    from fastdrivevla_ros.eval.report import compare

    check_out_dir(args.out)
    print(f"wrote {compare(args.runs, args.out, args.baseline, args.intersect)}")
    return 0
