"""Image + mask folders for train-pruner: the relative-path layout (shared with external masks
such as a Grounded-SAM run), OR-ing several mask folders, counting unmasked images, and refusing
a mask that belongs to another image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastdrivevla_ros.errors import DataError
from fastdrivevla_ros.training.data import ImageMaskDataset, collate, find_pairs


def _image(path, w=224, h=112):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _mask(path, box, w=224, h=112):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    Image.fromarray(m).save(path)


@pytest.fixture
def layout(tmp_path):
    """A nuScenes-like dataroot (maps/ must be ignored) with two mask folders."""
    data = tmp_path / "data"
    for name in ("a", "b", "c"):
        _image(data / "samples" / "CAM_FRONT" / f"{name}.jpg")
    _image(data / "maps" / "map.png")
    ann, sam = tmp_path / "annotation_masks", tmp_path / "grounded_sam"
    _mask(ann / "samples" / "CAM_FRONT" / "a.png", (0, 0, 56, 56))
    _mask(sam / "samples" / "CAM_FRONT" / "a.png", (168, 56, 224, 112))
    _mask(sam / "samples" / "CAM_FRONT" / "b.png", (0, 0, 224, 112))
    return data, ann, sam


def test_pairs_follow_the_relative_path_layout_and_unmasked_images_are_counted(layout):
    data, ann, sam = layout
    pairs, unmasked = find_pairs(data, [ann, sam])
    assert [p.key for p in pairs] == ["samples/CAM_FRONT/a.jpg", "samples/CAM_FRONT/b.jpg"]
    assert len(pairs[0].masks) == 2 and len(pairs[1].masks) == 1
    assert unmasked == ["samples/CAM_FRONT/c.jpg"]          # maps/ is not searched


def test_several_mask_folders_are_ored_at_the_processor_size(layout, tiny_vla):
    data, ann, sam = layout
    pairs, _ = find_pairs(data, [ann, sam])
    item = ImageMaskDataset(pairs[:1], tiny_vla[2], max_pixels=224 * 112)[0]
    mask = item["mask"][0]
    assert item["image"].shape == (3, 112, 224) and mask.shape == (112, 224)
    assert mask[:56, :56].all() and mask[56:, 168:].all()
    assert float(mask.mean()) == pytest.approx(2 * 56 * 56 / (112 * 224))
    batch = collate([item, item])
    assert batch["pixel_values"].shape[0] == 2 * item["pixel_values"].shape[0]
    assert torch.equal(batch["grid_thw"][0], item["grid_thw"])


def test_a_mask_of_another_shape_is_refused(layout, tiny_vla):
    data, ann, _ = layout
    _mask(ann / "samples" / "CAM_FRONT" / "b.png", (0, 0, 10, 10), w=100, h=100)
    pairs, _ = find_pairs(data, [ann])
    with pytest.raises(DataError, match="aspect ratios differ"):
        ImageMaskDataset(pairs, tiny_vla[2], max_pixels=224 * 112)[1]


def test_missing_folders_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_pairs(tmp_path / "nope", [])
    with pytest.raises(DataError, match="not found"):
        find_pairs(tmp_path, [tmp_path / "no_masks"])
