"""
ReconPruner training data that does not leak into evaluation.

Scenes come from nuscenes-devkit's official splits; the real scene-0916 (official val split)
is the data: train-pruner leaves it out by default, refuses it when asked for it without
--allow-val, holds out whole scenes and reports coverage per held-out scene.
"""

from __future__ import annotations

import json
import shutil

import pytest

from fastdrivevla_ros.cli import main
from fastdrivevla_ros.data.splits import SPLITS, image_scenes, select_scenes
from fastdrivevla_ros.errors import ConfigError, DataError
from fastdrivevla_ros.training.data import (ImageMaskPair, find_pairs, select_scenes_of_pairs,
                                            split_pairs)


@pytest.fixture(scope="module")
def scene_masks(scene_dir, tmp_path_factory):
    """Object masks (no map: fast) for CAM_FRONT of keyframes 0, 10, 20, 30, 40."""
    out = tmp_path_factory.mktemp("masks")
    assert main(["foreground-masks", "--dataroot", str(scene_dir), "--version", "v1.0-mini",
                 "--split", "mini_val", "--cameras", "CAM_FRONT", "--every", "10",
                 "--no-road", "--out", str(out), "--no-progress"]) == 0
    return out


def test_split_names_and_scenes_are_the_devkits():
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes(verbose=False)
    assert set(SPLITS) == set(splits)
    assert select_scenes("mini_val") == splits["mini_val"] == ["scene-0103", "scene-0916"]
    assert select_scenes("val", ["scene-0916"]) == ["scene-0916"]
    assert select_scenes(None, None) is None
    with pytest.raises(ConfigError, match="not in the 'train' split"):
        select_scenes("train", ["scene-0916"])


def test_every_camera_image_of_the_scene_maps_to_scene_0916(scene_dir):
    index = image_scenes(scene_dir, "v1.0-mini")
    on_disk = {p.relative_to(scene_dir).as_posix()
               for p in (scene_dir / "samples").rglob("*.jpg")}
    assert len(on_disk) == 246 and on_disk <= set(index)
    assert set(index.values()) == {"scene-0916"}


def test_foreground_masks_writes_only_the_chosen_split(scene_dir, scene_masks, tmp_path):
    assert len(list(scene_masks.rglob("*.png"))) == 5               # mini_val holds scene-0916
    rc = main(["foreground-masks", "--dataroot", str(scene_dir), "--version", "v1.0-mini",
               "--split", "mini_train", "--no-road", "--out", str(tmp_path / "m"),
               "--no-progress"])
    assert rc == 2 and not (tmp_path / "m").exists()               # none of its scenes here


def test_val_scenes_are_left_out_by_default_and_refused_when_chosen(scene_dir, scene_masks):
    pairs, _ = find_pairs(scene_dir, [scene_masks])
    assert len(pairs) == 5
    kept, scenes, left_out = select_scenes_of_pairs(pairs, scene_dir)
    assert kept == [] and left_out == 5
    for choice in ({"split": "val"}, {"scenes": ["scene-0916"]}):
        with pytest.raises(ConfigError, match="--allow-val"):
            select_scenes_of_pairs(pairs, scene_dir, **choice)
    kept, scenes, _ = select_scenes_of_pairs(pairs, scene_dir, split="mini_val", allow_val=True)
    assert kept == pairs and set(scenes.values()) == {"scene-0916"}
    assert select_scenes_of_pairs(pairs, scene_dir, split="train", allow_val=True)[0] == []


def test_nuscenes_images_without_their_tables_are_refused(scene_dir, scene_masks, tmp_path):
    """Copied out of the dataroot, nothing tells which scene an image is from."""
    data = tmp_path / "plain"
    shutil.copytree(scene_dir / "samples", data / "samples")
    pairs, _ = find_pairs(data, [scene_masks])
    with pytest.raises(DataError, match="--allow-val"):
        select_scenes_of_pairs(pairs, data)
    with pytest.raises(ConfigError, match="nuScenes dataroot"):
        select_scenes_of_pairs(pairs, data, split="train", allow_val=True)
    assert select_scenes_of_pairs(pairs, data, allow_val=True)[0] == pairs


def test_held_out_split_takes_whole_scenes():
    pairs = [ImageMaskPair(f"samples/CAM_FRONT/s{s}_{f:02d}.jpg", None, ())
             for s in range(10) for f in range(20)]
    groups = {p.key: f"scene-{p.key.split('/')[-1][1]}" for p in pairs}
    train, held = split_pairs(pairs, 0.2, groups)
    train_scenes, held_scenes = {groups[p.key] for p in train}, {groups[p.key] for p in held}
    assert len(held_scenes) == 2 and not train_scenes & held_scenes
    assert len(held) == 40 and len(train) == 160
    assert split_pairs(pairs, 0.2, groups) == (train, held)        # deterministic
    assert len(split_pairs(pairs, 0.01, groups)[1]) == 20           # at least one scene


def _two_scene_dataroot(scene_dir, root):
    """
    Split scene-0916 into two scenes of real images.

    The tables are copied and the second half of the samples renamed scene-0103 (the other
    mini_val scene); images and maps are linked.
    """
    tables = root / "v1.0-mini"
    shutil.copytree(scene_dir / "v1.0-mini", tables)
    for name in ("samples", "maps"):
        (root / name).symlink_to(scene_dir / name)
    scenes = json.loads((tables / "scene.json").read_text())
    samples = sorted(json.loads((tables / "sample.json").read_text()),
                     key=lambda s: s["timestamp"])
    second = dict(scenes[0], token="second-half", name="scene-0103")
    for s in samples[len(samples) // 2:]:
        s["scene_token"] = second["token"]
    (tables / "scene.json").write_text(json.dumps(scenes + [second]))
    (tables / "sample.json").write_text(json.dumps(samples))
    return root


def test_eval_json_reports_coverage_per_held_out_scene(scene_dir, scene_masks, tiny_model_dir,
                                                       tmp_path, one_thread):
    data = _two_scene_dataroot(scene_dir, tmp_path / "root")
    index = image_scenes(data, "v1.0-mini")
    out = tmp_path / "recon"
    assert main(["train-pruner", "--model", str(tiny_model_dir), "--data", str(data),
                 "--masks", str(scene_masks), "--split", "mini_val", "--allow-val",
                 "--val-fraction", "0.5", "--out", str(out), "--max-pixels", str(448 * 252),
                 "--batch-size", "2", "--decoder-layers", "1", "--max-steps", "1",
                 "--decoder-warmup-steps", "0", "--previews", "0", "--no-progress"]) == 0
    report = json.loads((out / "eval.json").read_text())
    (held,) = report["scenes"]                                     # one of the two, whole
    masked = [p.key for p in find_pairs(data, [scene_masks])[0]]
    assert report["scenes"][held]["images"] == sum(index[k] == held for k in masked)
    assert report["images"] == report["scenes"][held]["images"]
    assert 0 <= report["scenes"][held]["coverage"] <= 1
