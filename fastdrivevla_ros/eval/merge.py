"""`fastdrivevla merge OUT RUN_DIR...`: join the shard runs of one replay evaluation.

Checks that all shards 0..n-1 of the same bag, pruner and ratio are present, finished, and
cover every keyframe exactly once; then writes predictions.jsonl, metrics.json, report.md and
plots into OUT as if the evaluation had run unsharded.
"""

from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="directory for the merged run (must not hold predictions)")
    p.add_argument("runs", nargs="+", help="shard run directories (all shards of one run)")
    p.add_argument("--baseline", help="unpruned run directory for the Rel. column")


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.eval.replay import headline, merge_runs

    metrics = merge_runs(args.out, args.runs, args.baseline)
    print(headline(metrics, args.out))
    return 0
