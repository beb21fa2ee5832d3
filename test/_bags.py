"""Converted bags shared by the data and eval tests: built once per test process (the
conversion decodes the city map raster, which takes seconds), deleted at exit."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="fastdrivevla-bags-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


@lru_cache(maxsize=None)
def converted_bag(scene_dir: Path, storage: str = "mcap", distro: str = "jazzy",
                  max_keyframes: int | None = None, first_keyframe: int = 0) -> Path:
    """scene-0916 converted with `fastdrivevla convert`'s API (read-only for tests): all its
    keyframes, or `max_keyframes` of them from `first_keyframe` on."""
    from fastdrivevla_ros.data.nuscenes_bag import convert

    first = f"-from{first_keyframe}" if first_keyframe else ""
    out = _ROOT / f"scene-0916-{storage}-{distro}-{max_keyframes or 'all'}{first}"
    convert(scene_dir, "v1.0-mini", out, scenes=["scene-0916"], storage=storage,
            distro=distro, max_keyframes=max_keyframes, first_keyframe=first_keyframe,
            progress=False)
    return out


@lru_cache(maxsize=None)
def frames(bag: Path) -> list:
    """All keyframes of a bag, with images (list of bag_reader.Frame)."""
    from fastdrivevla_ros.data.bag_reader import BagFrames

    return list(BagFrames(bag))
