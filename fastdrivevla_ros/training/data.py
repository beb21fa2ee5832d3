"""Image + foreground-mask pairs for ReconPruner training, and the frozen vision encoder.

Folder layout (the same one `fastdrivevla foreground-masks` writes, and the one an external
segmenter such as Grounded-SAM should write):

    DATA/<rel>/<name>.jpg            images (.jpg/.jpeg/.png); for a nuScenes dataroot only
                                     DATA/samples/** is searched
    MASKS/<rel>/<name>.png           single-channel mask, nonzero = foreground, the image's size
                                     (any size with the same aspect ratio is resized, nearest)

Several mask folders may be given: their masks are OR-ed (e.g. annotation masks + Grounded-SAM).
Images without any mask are skipped and counted, never silently. Images are resized exactly as
the VLA sees them (`vla.inputs.model_image`, then Qwen's smart_resize to multiples of 28 px).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastdrivevla_ros.data.foreground import mask_path
from fastdrivevla_ros.errors import ConfigError, DataError
from fastdrivevla_ros.vla.inputs import model_image, pixel_bounds, ProcessorGeometry, TOKEN_PX

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class ImageMaskPair:
    key: str                   # image path relative to the data root (posix)
    image: Path
    masks: tuple[Path, ...]    # every existing mask of the image (OR-ed)


def find_pairs(data_dir: str | Path, mask_dirs: list[str | Path]) -> tuple[list[ImageMaskPair],
                                                                            list[str]]:
    """All images under `data_dir` (its `samples/` if it is a nuScenes dataroot) with at least one
    mask in `mask_dirs`. Returns (pairs sorted by key, keys of images without a mask)."""
    data = Path(data_dir).expanduser()
    if not data.is_dir():
        raise DataError(f"data directory {data} does not exist")
    masks = [Path(m).expanduser().resolve() for m in mask_dirs]
    missing_dirs = [str(m) for m in masks if not m.is_dir()]
    if missing_dirs:
        raise DataError(f"mask directories not found: {missing_dirs}")
    search = data / "samples" if (data / "samples").is_dir() else data
    pairs, unmasked = [], []
    for path in sorted(search.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if any(m == path.resolve() or m in path.resolve().parents for m in masks):
            continue   # a mask folder inside the data folder
        key = path.relative_to(data).as_posix()
        found = tuple(p for p in (mask_path(m, key) for m in masks) if p.is_file())
        if found:
            pairs.append(ImageMaskPair(key, path, found))
        else:
            unmasked.append(key)
    return pairs, unmasked


def select_scenes_of_pairs(pairs: list[ImageMaskPair], data_dir: str | Path,
                           split: str | None = None, scenes=None, allow_val: bool = False,
                           version: str | None = None):
    """Keep the pairs of the chosen nuScenes scenes; keep evaluation (val) scenes out.

    With nuScenes tables in `data_dir` (the dataroot): `split` / `scenes` choose scenes
    (data/splits.py); without a choice every scene except the val split is kept; val scenes
    that are chosen explicitly need `allow_val`. Without tables (a plain image folder) no
    choice is possible, and nuScenes camera files are refused unless `allow_val`, since
    nothing shows which scenes they come from. Returns (pairs, {key: scene} or None without
    tables, number of val images left out).
    """
    from fastdrivevla_ros.data.splits import (NUSCENES_CAMERA_FILE, eval_scenes, image_scenes,
                                              select_scenes, table_version)

    wanted = select_scenes(split, scenes)
    version = table_version(data_dir, version)
    if version is None:
        if wanted is not None:
            raise ConfigError("--split/--scenes need --data to be a nuScenes dataroot with its "
                              "table folder (e.g. v1.0-trainval)")
        if not allow_val and any(NUSCENES_CAMERA_FILE.search(p.key) for p in pairs):
            raise DataError(f"{data_dir} holds nuScenes camera images but no nuScenes tables, "
                            "so the val scenes that replay evaluates cannot be left out; pass "
                            "the dataroot as --data, or --allow-val to train on them anyway")
        return pairs, None, 0
    index = image_scenes(data_dir, version)
    unknown = [p.key for p in pairs if p.key not in index]
    if unknown:
        raise DataError(f"{len(unknown)} image(s) are not in {version}'s tables, e.g. "
                        f"{unknown[:3]}; is --nuscenes-version right?")
    held = eval_scenes()
    if wanted is None:
        left_out = 0 if allow_val else sum(index[p.key] in held for p in pairs)
        pairs = [p for p in pairs if allow_val or index[p.key] not in held]
    else:
        chosen = set(wanted)
        pairs, left_out = [p for p in pairs if index[p.key] in chosen], 0
        val = sorted({index[p.key] for p in pairs} & held)
        if val and not allow_val:
            raise ConfigError(f"{len(val)} chosen scene(s) are in the val split that replay "
                              f"evaluates (e.g. {val[:3]}); pass --allow-val to train on them")
    return pairs, {p.key: index[p.key] for p in pairs}, left_out


def split_pairs(pairs: list[ImageMaskPair], val_fraction: float,
                groups: dict[str, str] | None = None):
    """Train / held-out split by whole groups (scenes: `groups` maps key -> scene; without it
    every image is its own group): round(val_fraction * groups) groups, at least one when
    val_fraction > 0, chosen by a hash of the group name (deterministic, no neighbouring
    frames of one scene on both sides). Returns (train pairs, held-out pairs)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    group = (lambda p: groups[p.key]) if groups is not None else (lambda p: p.key)
    names = sorted({group(p) for p in pairs},
                   key=lambda g: hashlib.sha1(g.encode()).hexdigest())
    count = max(1, round(val_fraction * len(names))) if val_fraction > 0 else 0
    held = set(names[:count])
    return [p for p in pairs if group(p) not in held], [p for p in pairs if group(p) in held]


def load_mask(paths: tuple[Path, ...], size: tuple[int, int],
              image_size: tuple[int, int]) -> np.ndarray:
    """OR of the masks at `paths`, resized (nearest) to size (w, h) -> [h, w] bool. Each mask
    must have the aspect ratio of its image, image_size (w, h)."""
    out = np.zeros(size[::-1], dtype=bool)
    for p in paths:
        try:
            m = Image.open(p)
            m.load()
        except OSError as e:
            raise DataError(f"{p}: unreadable mask ({e})") from e
        if m.mode not in ("1", "L", "P", "I", "I;16"):
            raise DataError(f"{p}: mask must be single-channel, got mode {m.mode}")
        w, h = m.size
        iw, ih = image_size
        if abs(w / h - iw / ih) > ASPECT_TOLERANCE * iw / ih:
            raise DataError(f"{p}: mask is {w}x{h}, its image {iw}x{ih} (aspect ratios differ; "
                            "the mask belongs to another image?)")
        m = m.convert("L").resize(size, Image.NEAREST)
        out |= np.asarray(m) > 0
    return out


class ImageMaskDataset(torch.utils.data.Dataset):
    """Item: pixel_values [P, 1176] (processor patches), grid_thw [3], image [3, H, W] float in
    [0, 1] (processor-resized, H = 28 rows, W = 28 cols), mask [1, H, W] in {0, 1}, key str."""

    def __init__(self, pairs: list[ImageMaskPair], image_processor, max_pixels: int,
                 image_size: tuple[int, int] | None = None):
        self.pairs, self.processor = list(pairs), image_processor
        self.max_pixels, self.image_size = max_pixels, image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        pair = self.pairs[i]
        try:
            with Image.open(pair.image) as im:
                arr = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise DataError(f"{pair.image}: unreadable image ({e})") from e
        img = model_image(arr, self.max_pixels, self.image_size)
        low, high = pixel_bounds(ProcessorGeometry.of(self.processor), self.max_pixels,
                                 self.image_size)   # as the engine resizes (vla/inputs.py)
        processed = self.processor(images=[img], return_tensors="pt",
                                   size={"shortest_edge": low, "longest_edge": high})
        grid_thw = processed["image_grid_thw"][0]
        merge = self.processor.merge_size
        size = (int(grid_thw[2]) // merge * TOKEN_PX, int(grid_thw[1]) // merge * TOKEN_PX)
        image = np.asarray(img.resize(size, Image.BICUBIC), dtype=np.float32) / 255.0
        mask = load_mask(pair.masks, size, (arr.shape[1], arr.shape[0]))
        return {"pixel_values": processed["pixel_values"], "grid_thw": grid_thw,
                "image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                "mask": torch.from_numpy(mask)[None].float(), "key": pair.key}


def token_grid(grid_thw: torch.Tensor, merge: int = 2) -> tuple[int, int]:
    """(rows, cols) of LLM visual tokens for one image's processor grid_thw [3] (t, h, w):
    ViT patches merged merge x merge."""
    return tuple(int(x) // merge for x in grid_thw[1:].tolist())


def collate(items: list[dict]) -> dict:
    """Batch items of ONE token grid (fix the resolution with image_size to mix image sizes)."""
    grids = {tuple(it["grid_thw"].tolist()) for it in items}
    if len(grids) > 1:
        raise DataError(f"a batch mixes token grids {sorted(grids)}: images of different sizes; "
                        "set a fixed --image-size W H (or use --batch-size 1)")
    return {"pixel_values": torch.cat([it["pixel_values"] for it in items]),
            "grid_thw": torch.stack([it["grid_thw"] for it in items]),
            "image": torch.stack([it["image"] for it in items]),
            "mask": torch.stack([it["mask"] for it in items]),
            "keys": [it["key"] for it in items]}


class FrozenVision:
    """The VLA's vision encoder + merger, frozen: batch -> post-merger tokens [B, N, D].
    cache_dir: optional folder of per-image token files (safetensors), keyed by image, resolution
    and encoder fingerprint, so later epochs skip the encoder."""

    def __init__(self, visual, cache_dir: str | Path | None = None, tag: str = ""):
        self.visual = visual.eval()     # frozen: only ever run under no_grad, never optimised
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.tag = tag
        if self.cache_dir:
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    def _file(self, key: str) -> Path:
        return self.cache_dir / (hashlib.sha1(f"{self.tag}|{key}".encode()).hexdigest()
                                 + ".safetensors")

    @torch.no_grad()
    def __call__(self, batch: dict, device) -> torch.Tensor:
        from safetensors.torch import load_file, save_file

        keys = batch["keys"]
        if self.cache_dir and all(self._file(k).is_file() for k in keys):
            return torch.stack([load_file(str(self._file(k)))["v"] for k in keys]).to(device)
        grid = batch["grid_thw"].to(device)
        out = self.visual(batch["pixel_values"].to(device, self.visual.dtype), grid_thw=grid)
        v = out.pooler_output.reshape(len(keys), -1, out.pooler_output.shape[-1])
        if self.cache_dir:
            for k, t in zip(keys, v):
                tmp = self._file(k).with_suffix(f".tmp{os.getpid()}")
                save_file({"v": t.cpu().contiguous()}, str(tmp))
                os.replace(tmp, self._file(k))
        return v
