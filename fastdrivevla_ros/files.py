"""Result files written whole or not at all, and content identity of weights and bags.

Atomic writes: every result file (JSON, markdown, PNG, safetensors) is written to a temporary
file in the same directory and renamed over its target, so a full disk or a kill leaves the
old file (or none), never half a one that a later run would take for finished. Only
predictions.jsonl is appended in place (eval/store.py repairs a torn last line).

Identity: a run records WHAT it was made from, not only where: `path_digest` is a sha256 over
a file's or a directory's content. Digests are cached by (real path, size, mtime) in
`<user cache>/fastdrivevla/digests.json` (a `filelock` lock guards it), so a 7 GB checkpoint
is read once, not on every run; a replaced file has another size or mtime and is read again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "FASTDRIVEVLA_CACHE"      # override of the cache directory (tests use it)
# the files of a model directory that decide what it computes (weights, configs, tokenizer)
MODEL_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja")


def json_safe(value):
    """NaN/inf -> None so every file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):     # numpy scalars
        return json_safe(value.item())
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


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path` (same suffix, so writers that pick the format by
    extension still work); when the block succeeds it is renamed over `path`."""
    path = Path(path)
    with naming(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                   dir=path.parent)
        os.close(fd)
    tmp = Path(tmp)
    try:
        with naming(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> None:
    """Atomic write of `data` (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path, data, indent: int | None = 1) -> None:
    """Atomic strict JSON (NaN/inf written as null)."""
    write_text(path, json.dumps(json_safe(data), indent=indent, allow_nan=False))


def save_figure(fig, path, **kwargs) -> None:
    """matplotlib's savefig after tight_layout, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
    plt.close(fig)


def _cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastdrivevla")
    return Path(root) / "digests.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}                     # missing or damaged: start again (it is only a cache)
    return data if isinstance(data, dict) else {}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path) -> str:
    """sha256 of a file's content, cached by (real path, size, mtime)."""
    from filelock import FileLock

    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache = _cache_file()
    known = _read_cache(cache).get(key)
    if isinstance(known, str):
        return known
    digest = _sha256(path)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache) + ".lock", timeout=30):
            entries = _read_cache(cache)
            entries[key] = digest
            write_json(cache, entries, indent=None)
    except (OSError, TimeoutError):
        pass                          # an unwritable cache costs time, never correctness
    return digest


def path_digest(path, names=None, suffixes=None) -> str:
    """sha256 (16 hex) of a file, or of a directory's files (their names and digests).

    names: only these files of the directory (e.g. a pruner's config.json and weights);
    suffixes: only top-level files with these suffixes; neither: every file, recursively
    (hidden files excepted)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)[:16]
    if names is not None:
        files = [path / n for n in names if (path / n).is_file()]
    elif suffixes is not None:
        files = sorted(p for p in path.iterdir() if p.suffix in suffixes and p.is_file())
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts))
    listing = "\n".join(f"{p.relative_to(path).as_posix()} {file_digest(p)}" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()[:16]
