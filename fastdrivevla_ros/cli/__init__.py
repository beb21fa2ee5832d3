"""The `fastdrivevla` command: the only package that parses arguments.

One module per subcommand, each exposing `configure_parser(parser)` and `run(args) -> exit
code`; it turns flags into typed arguments of the library (vla, data, eval, training, bench)
and holds no logic a library caller needs. Modules load lazily so `--help` stays fast."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import traceback

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fastdrivevla_ros.cli.demo",
             "plan on bundled real nuScenes frames with the tiny model; write plan + heatmaps"),
    "make-tiny-model": ("fastdrivevla_ros.cli.make_tiny_model",
                        "write a tiny random Qwen2.5-VL checkpoint (offline) for tests/demo"),
    "convert": ("fastdrivevla_ros.cli.convert", "convert nuScenes scenes into a ROS 2 bag"),
    "replay": ("fastdrivevla_ros.cli.replay", "evaluate a model + pruner by replaying a bag"),
    "sweep": ("fastdrivevla_ros.cli.sweep",
              "every pruner x ratio x bag on Ray (local, or a cluster with --address)"),
    "merge": ("fastdrivevla_ros.cli.merge", "merge the shard runs of one replay evaluation"),
    "report": ("fastdrivevla_ros.cli.report", "compare replay runs: Table 1 + plots"),
    "plan": ("fastdrivevla_ros.cli.plan",
             "plan one frame from image files with any model, pruner and ratio"),
    "foreground-masks": ("fastdrivevla_ros.cli.foreground_masks",
                         "nuScenes-FG-style foreground masks (a PNG per camera image)"),
    "train-pruner": ("fastdrivevla_ros.cli.train_pruner",
                     "train ReconPruner (adversarial fg/bg reconstruction, accelerate)"),
    "bench": ("fastdrivevla_ros.cli.bench", "FLOPs, ms, memory per pruner x ratio (Table 4)"),
    "search-budgets": ("fastdrivevla_ros.cli.search_budgets",
                       "per-view token budgets by TPE on a validation bag (Prune2Drive)"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default once: not for options without one, nor where the help states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False) or "default" in text:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Argument errors in one line, with where to read more (no 10-line usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fastdrivevla",
        description="Qwen2.5-VL driving planner with visual-token pruning (FastDriveVLA). "
                    "Run `fastdrivevla COMMAND --help` for each command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=HelpFormatter)
        p.set_defaults(_module=module)
        p.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
        # each module adds its own options lazily: only the chosen command's module is imported
    return parser


def main(argv: list[str] | None = None) -> int:
    from fastdrivevla_ros.errors import FastDriveError

    argv = list(sys.argv[1:] if argv is None else argv)
    # offline by default: a mistyped --model is refused at once, not retried against the hub
    # for half a minute (HF_HUB_OFFLINE=0 allows downloads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    # first pass: which command? then let its module add its options and parse again
    # (-h is held back in this pass so the command's own options appear in its --help)
    first = [a for a in argv if a not in ("-h", "--help")]
    if not first or first[0].startswith("-"):
        return _help_or_usage(parser, argv)
    known, _ = parser.parse_known_args(first)
    module = importlib.import_module(known._module)
    sub = next(a for a in parser._subparsers._group_actions).choices[known.command]
    module.configure_parser(sub)
    args, extra = parser.parse_known_args(argv)
    if extra:                                # said by the command, pointing at its --help
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(module.run(args) or 0)
    except Terminated:
        print("terminated (SIGTERM); a rerun with the same arguments resumes", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FastDriveError, OSError) as e:
        return _fail(args, describe_error(e), 2)
    except Exception as e:   # a bug: still one line, the traceback with --verbose
        return _fail(args, f"internal error {type(e).__name__}: {e} (rerun with --verbose for "
                     "the traceback and report it)", 1)
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill`): unwound like Ctrl-C, so every clean-up runs
    (a half-made run folder or bag is removed, locks are released)."""


def _terminate(signum, frame):
    raise Terminated()


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.verbose:
        traceback.print_exc()
    print(f"fastdrivevla {args.command}: error: {message}", file=sys.stderr)
    return code


_OS_HINTS = {errno.ENOSPC: "free disk space or write to another disk",
             errno.EDQUOT: "free disk space or write to another disk",
             errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
             errno.EROFS: "write to a writable location",
             errno.ENOENT: "check the path",
             errno.ENOTDIR: "a part of the path is a file, not a directory",
             errno.EEXIST: "it exists and is not a directory",
             errno.EISDIR: "it is a directory; give a file"}


def describe_error(e: Exception) -> str:
    """One line: what went wrong, with which file, and what to do."""
    if isinstance(e, OSError):
        where = f" ({e.filename})" if e.filename else ""
        hint = _OS_HINTS.get(e.errno, "check the path and the disk")
        return f"{e.strerror or e}{where}: {hint}"
    return str(e)


def _help_or_usage(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """No command given: top-level --help (exit 0) or the usage error (exit 2)."""
    parser.parse_args(argv)
    return 2
