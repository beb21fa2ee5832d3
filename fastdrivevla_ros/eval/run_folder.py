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
import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fastdrivevla_ros.errors import ConfigError, DataError

MANIFEST = "shard.json"          # the manifest, plus coverage (expected, complete) at the end
LOCK = ".lock"
# what must match between a run and its resumption (and between the shards of one merge)
MANIFEST_KEYS = ("source", "bag_id", "shard", "model", "dtype", "pruner", "pruner_options",
                 "pruning_ratio", "settings", "code_version")


def _json_safe(value):
    """NaN/inf -> None so every file is strict JSON."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@contextmanager
def naming(path):
    """OSErrors inside the block name `path` (a failed write() alone does not say which file:
    a user told 'No space left on device' must also learn where)."""
    try:
        yield
    except OSError as e:
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def write_json(path: Path, data) -> None:
    """Atomic write (temp file + rename): a full disk leaves the old file, never half a one."""
    tmp = Path(path).with_suffix(".tmp")
    try:
        with naming(path):
            tmp.write_text(json.dumps(_json_safe(data), indent=1, allow_nan=False))
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    """sha256 of the bag's metadata.yaml (file names, message counts, start and duration)."""
    path = Path(bag) / "metadata.yaml"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e}): is {bag} a bag directory "
                        "written by `fastdrivevla convert`?") from e


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
