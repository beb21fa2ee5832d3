"""`fastdrivevla merge OUT RUN_DIR...`: join the shard runs of one replay (eval/merge.py)."""

from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="directory for the merged run (must not hold predictions)")
    p.add_argument("runs", nargs="+", help="shard run directories (all shards of one run)")
    p.add_argument("--baseline", help="unpruned run directory for the Rel. column")


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.eval.merge import merge_runs
    from fastdrivevla_ros.eval.store import headline

    from fastdrivevla_ros.cli.settings import check_out_dir

    check_out_dir(args.out)
    metrics = merge_runs(args.out, args.runs, args.baseline)
    print(headline(metrics, args.out))
    return 0
