"""nuScenes' official scene splits (nuscenes-devkit) and the scene each camera image belongs to.

Training data must not leak into evaluation: replay evaluates the official `val` scenes, so the
ReconPruner trainer excludes them unless asked (`--allow-val`), and its held-out images are
whole scenes, never neighbouring frames of a scene it trains on. The split lists come from
`nuscenes.utils.splits.create_splits_scenes`; which scene an image is from comes from the
dataroot's own tables (scene.json, sample.json, sample_data.json).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastdrivevla_ros.errors import ConfigError, DataError

#: split names of `create_splits_scenes` (listed here so `--help` needs no devkit import)
SPLITS = ("train", "val", "test", "mini_train", "mini_val", "train_detect", "train_track")
#: the split open-loop evaluation (replay) reports on; mini_val is a subset of it
EVAL_SPLIT = "val"
#: a nuScenes camera file name: <log>__CAM_<NAME>__<timestamp>.jpg
NUSCENES_CAMERA_FILE = re.compile(r"__CAM_[A-Z_]+__\d+\.jpe?g$")


def official_splits() -> dict[str, list[str]]:
    """{split: scene names} as nuscenes-devkit defines them."""
    from nuscenes.utils.splits import create_splits_scenes

    return create_splits_scenes(verbose=False)


def select_scenes(split: str | None = None, scenes=None) -> list[str] | None:
    """Scene names chosen by an official `split` and/or explicit `scenes` (both: each named
    scene must belong to the split). None when neither is given (every scene)."""
    if split is None and not scenes:
        return None
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown nuScenes split {split!r}; one of {', '.join(SPLITS)}")
    if split is None:
        return list(dict.fromkeys(scenes))
    members = official_splits()[split]
    if not scenes:
        return list(members)
    outside = sorted(set(scenes) - set(members))
    if outside:
        raise ConfigError(f"scene(s) {outside} are not in the {split!r} split")
    return list(dict.fromkeys(scenes))


def eval_scenes() -> set[str]:
    """Scenes that open-loop evaluation uses (the official val split)."""
    return set(official_splits()[EVAL_SPLIT])


def table_version(dataroot: str | Path, version: str | None = None) -> str | None:
    """The dataroot's table folder (e.g. 'v1.0-trainval'): `version` if given (it must exist),
    else the only v1.0-* folder holding scene.json; None if there is none."""
    root = Path(dataroot)
    if version is not None:
        if not (root / version / "scene.json").is_file():
            raise DataError(f"{root / version}/scene.json not found (is --nuscenes-version "
                            "right?)")
        return version
    found = sorted(p.parent.name for p in root.glob("v1.0-*/scene.json"))
    if len(found) > 1:
        raise DataError(f"{root} holds several nuScenes versions {found}; choose one with "
                        "--nuscenes-version")
    return found[0] if found else None


def image_scenes(dataroot: str | Path, version: str) -> dict[str, str]:
    """{camera image path relative to the dataroot (posix): scene name} from the version's
    tables (keyframes and sweeps)."""
    tables = Path(dataroot) / version

    def load(name: str) -> list[dict]:
        try:
            return json.loads((tables / f"{name}.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{tables / name}.json: unreadable nuScenes table ({e})") from e

    scene_name = {s["token"]: s["name"] for s in load("scene")}
    sample_scene = {s["token"]: scene_name[s["scene_token"]] for s in load("sample")}
    return {sd["filename"]: sample_scene[sd["sample_token"]] for sd in load("sample_data")
            if NUSCENES_CAMERA_FILE.search(sd["filename"])}
