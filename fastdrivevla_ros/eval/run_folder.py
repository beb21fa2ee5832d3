"""A replay run folder that cannot mix runs: its manifest, its lock, its clean-up.

The manifest (every setting a prediction depends on: model, dtype, pruner and its options,
ratios and per-view budgets, cameras, resolution, grammar, decode settings, code version, bag
identity, shard, and which program wrote it) is written to shard.json BEFORE the first
prediction. Resuming a folder with anything different is refused and nothing is written. One
writer at a time: an exclusive `filelock` lock on RUN/.lock (a second replay, or a replay and
the ROS replay evaluator, into one folder: the second fails at once). A folder this process
created is removed again if the run fails before its first prediction. `open_run_folder` is the
whole life of a CLI run; a long-lived writer (pipeline/evaluation.py) uses its parts
(`check_resumable`, `lock_run_folder`, `claim`) directly.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from fastdrivevla_ros.errors import ConfigError, DataError
from fastdrivevla_ros.files import naming, path_digest, write_json  # noqa: F401 (re-exported)

MANIFEST = "shard.json"          # the manifest, plus coverage (expected, complete) at the end
LOCK = ".lock"
# what must match between a run and its resumption (and between the shards of one merge)
MANIFEST_KEYS = ("source", "bag_id", "shard", "model", "identity", "dtype", "pruner",
                 "pruner_options", "pruning_ratio", "settings", "code_version")


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """Package version plus the git commit of the source tree when it is a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("fastdrivevla_ros")
    except PackageNotFoundError:
        v = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"],
                                cwd=Path(__file__).resolve().parent, capture_output=True,
                                text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{v}+{commit}" if commit else v


def bag_id(bag) -> str:
    """Content digest of the bag directory: metadata.yaml, the storage files (messages, so
    ground truth and drivable patches too) and conversion.json (convert's parameters)."""
    path = Path(bag) / "metadata.yaml"
    try:
        path.stat()
        return path_digest(bag)
    except OSError as e:
        raise DataError(f"cannot read {e.filename or path} ({e.strerror or e}): is {bag} a bag "
                        "directory written by `fastdrivevla convert`?") from e


def weights_identity(model: str = "", pruner_options: dict | None = None) -> dict:
    """Content digests of the model's and the pruner's weights (None: not found locally).

    A hub id is looked up in the local hub cache only (what the loader used)."""
    from fastdrivevla_ros.files import MODEL_SUFFIXES

    out = {}
    if model:
        path = Path(model).expanduser()
        if not path.is_dir():
            from fastdrivevla_ros.vla.loading import cached_hub_snapshot

            path = cached_hub_snapshot(model)
        out["model"] = path_digest(path, suffixes=MODEL_SUFFIXES) if path else None
    weights = (pruner_options or {}).get("weights")
    if weights:
        out["pruner_weights"] = path_digest(weights, names=("config.json", "model.safetensors")) \
            if Path(weights).is_dir() else None
    return out



def manifest_differences(old: dict, new: dict, keys=MANIFEST_KEYS) -> list[str]:
    """'key: old (in the folder) != new (now)' for every manifest key that differs."""
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}: {a.get(k)!r} != {b.get(k)!r}"
                    for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{key}: {a!r} != {b!r}")
    return out


def read_manifest(run_dir) -> dict | None:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is unreadable ({e}); use another --out or delete the "
                        "folder") from e


def check_resumable(run_dir, manifest: dict, keys=MANIFEST_KEYS) -> None:
    """Raise ConfigError naming every difference if `run_dir` holds another run.

    keys: the manifest keys to compare (a writer that learns its settings late checks the
    ones it knows first)."""
    run_dir = Path(run_dir)
    old = read_manifest(run_dir)
    if old is None:
        if (run_dir / "predictions.jsonl").is_file():
            raise ConfigError(f"{run_dir} has predictions but no {MANIFEST} (an older or "
                              "foreign run); use another output folder")
        return
    diff = manifest_differences(old, manifest, keys)
    if diff:
        raise ConfigError(f"{run_dir} holds a different run (folder != now: "
                          f"{'; '.join(diff)}); resume with the same settings or use another "
                          "output folder")


def _busy(run_dir: Path) -> ConfigError:
    return ConfigError(f"{run_dir} is being written by another replay or replay evaluator "
                       f"(lock {run_dir / LOCK} is held); wait for it to finish or use another "
                       "output folder")


def check_not_busy(run_dir) -> None:
    """Raise ConfigError if another process holds the folder's lock (a cheap early check)."""
    if (Path(run_dir) / LOCK).exists():
        lock_run_folder(run_dir).release()


def lock_run_folder(run_dir):
    """Take the folder's exclusive lock (no waiting) and return it; release() frees it."""
    from filelock import FileLock, Timeout

    lock = FileLock(Path(run_dir) / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise _busy(Path(run_dir)) from None
    return lock


def claim(run_dir, manifest: dict) -> None:
    """Under the lock: refuse a folder holding another run, else write the manifest if new."""
    check_resumable(run_dir, manifest)            # the other writer may have just started
    if read_manifest(run_dir) is None:
        write_json(Path(run_dir) / MANIFEST, manifest | {"expected": None, "complete": False})


@contextmanager
def open_run_folder(run_dir, manifest: dict, resumable: bool = True):
    """Create/lock `run_dir`, check or write its manifest; undo a creation on failure.

    Yields the folder. The lock is held until the block ends. A folder created here is
    removed when the block raises, unless it is `resumable` and holds predictions (a
    killed replay continues from them; a merge is simply redone)."""
    run_dir = Path(run_dir)
    check_resumable(run_dir, manifest)            # before creating or locking anything
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_run_folder(run_dir)
    try:
        claim(run_dir, manifest)
        yield run_dir
    except BaseException:
        if created and not (resumable and (run_dir / "predictions.jsonl").is_file()):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        lock.release()
