"""How long `fastdrivevla COMMAND --help` takes, per command, in a fresh interpreter each time.

Every command's help should print in under 2 s: heavy libraries (torch, transformers) are
imported only when a command runs. The first run of a command is the coldest here (file cache
permitting); the median of the following runs is the warm figure.

    python benchmarks/help_times.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from fastdrivevla_ros.cli import COMMANDS

LIMIT_S = 2.0


def help_seconds(command: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fastdrivevla_ros.cli", command, "--help"],
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{command} --help failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per command")
    args = parser.parse_args()
    print(f"{'command':<18} {'first s':>8} {'warm s':>8}  (limit {LIMIT_S} s)")
    slow = []
    for name in COMMANDS:
        first = help_seconds(name)
        warm = statistics.median(help_seconds(name) for _ in range(args.repeats))
        flag = "" if max(first, warm) < LIMIT_S else "  SLOW"
        slow += [name] if flag else []
        print(f"{name:<18} {first:8.2f} {warm:8.2f}{flag}")
    print("all under the limit" if not slow else f"over {LIMIT_S} s: {', '.join(slow)}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
