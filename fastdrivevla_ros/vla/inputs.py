"""Camera images + ego history -> Qwen2.5-VL model inputs (the processor's job, done directly).

transformers' Qwen2_5_VLProcessor cannot be built without torchvision in 5.x, so we call the
tokenizer (chat template) and the PIL image processor ourselves and expand each
<|image_pad|> to the number of merged tokens, exactly as the processor does.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fastdrivevla_ros.conventions import TOKEN_PX
from fastdrivevla_ros.errors import InputError
from fastdrivevla_ros.vla.prompt import EgoHistory, build_messages

IMAGE_PAD = "<|image_pad|>"
MIN_PIXELS = 56 * 56
MAX_PROCESSOR_PIXELS = 12_845_056   # Qwen2.5-VL hub default


@dataclass
class ModelInputs:
    """input_ids/attention_mask/mm_token_type_ids: [1, L]; pixel_values: [patches, 1176];
    image_grid_thw: [views, 3] (in 14-px patches); grids: per view (rows, cols) of LLM tokens;
    resized: per view RGB uint8 [rows*28, cols*28, 3]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    grids: list[tuple[int, int]]
    resized: list[np.ndarray]
    text: str

    def generate_kwargs(self) -> dict:
        """Keyword arguments for transformers' own forward/generate on the same inputs."""
        return dict(input_ids=self.input_ids, attention_mask=self.attention_mask,
                    mm_token_type_ids=self.mm_token_type_ids, pixel_values=self.pixel_values,
                    image_grid_thw=self.image_grid_thw)


def as_rgb_array(image, camera: str) -> np.ndarray:
    """Validate one camera image: HxWx3 uint8 RGB (numpy) or a PIL image."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"{camera}: expected an HxWx3 RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"{camera}: expected uint8 pixels, got {arr.dtype}")
    if min(arr.shape[:2]) < TOKEN_PX:
        raise InputError(f"{camera}: image {arr.shape[1]}x{arr.shape[0]} is smaller than one "
                         f"{TOKEN_PX}-px token")
    return arr


def target_size(w: int, h: int, max_pixels: int,
                image_size: tuple[int, int] | None) -> tuple[int, int]:
    """(w, h) of the image as the model's training pipeline saw it before Qwen's smart_resize.

    image_size (w, h): a fixed resize (FastDriveVLA's 1596x1596 -> 57x57 = 3,249 tokens).
    Otherwise LLaMA-Factory's `image_resolution` step (Impromptu-VLA, 512*512): shrink to at most
    max_pixels keeping the aspect ratio, so a 1600x900 frame becomes 682x384 and then 672x392 =
    24x14 = 336 tokens after smart_resize's rounding.
    """
    if image_size is not None:
        return tuple(image_size)
    if w * h > max_pixels:
        f = math.sqrt(max_pixels / (w * h))
        return int(w * f), int(h * f)
    return w, h


def model_image(arr: np.ndarray, max_pixels: int, image_size: tuple[int, int] | None) -> Image.Image:
    """An RGB array resized to target_size (bicubic), as a PIL image."""
    img = Image.fromarray(arr)
    size = target_size(*img.size, max_pixels, image_size)
    return img if size == img.size else img.resize(size, Image.BICUBIC)


def load_model_image(image, camera: str, max_pixels: int,
                     image_size: tuple[int, int] | None) -> np.ndarray:
    """One camera image -> [h, w, 3] uint8 at target_size.

    image: HxWx3 uint8 RGB, a PIL image, or compressed JPEG/PNG bytes. A JPEG not yet decoded
    is decoded at a reduced DCT scale (PIL's draft mode: 1/2, 1/4 or 1/8, never below the
    target size) before the bicubic resize: for 1600x900 -> 682x384 it decodes 800x450, a
    quarter of the pixels, and the model input differs by about one grey level on average
    (benchmarks/preprocess.py measures both).
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            image = Image.open(io.BytesIO(bytes(image)))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot decode {camera}: not a JPEG/PNG image ({e})") from e
    if isinstance(image, Image.Image):
        size = target_size(*image.size, max_pixels, image_size)
        if image.format == "JPEG" and size != image.size:
            image.draft("RGB", size)
        try:
            arr = as_rgb_array(image, camera)
        except (OSError, ValueError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"cannot decode {camera}: corrupt image ({e})") from e
    else:
        arr = as_rgb_array(image, camera)
        size = target_size(arr.shape[1], arr.shape[0], max_pixels, image_size)
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize(size, Image.BICUBIC))


def prepare_inputs(tokenizer, image_processor, cameras: list[str], images: dict,
                   history: EgoHistory, max_pixels: int,
                   image_size: tuple[int, int] | None = None) -> ModelInputs:
    missing = [c for c in cameras if c not in images]
    if missing:
        raise InputError(f"missing camera image(s): {missing}")
    arrays = [load_model_image(images[c], c, max_pixels, image_size) for c in cameras]
    # the processor's own smart_resize (multiples of 28 px, as in training), done here once: the
    # same bicubic resize also gives the heatmap images, and the processor skips its resize
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    factor = image_processor.patch_size * image_processor.merge_size
    sizes = [smart_resize(a.shape[0], a.shape[1], factor, MIN_PIXELS, MAX_PROCESSOR_PIXELS)
             for a in arrays]
    resized = [np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC))
               for a, (h, w) in zip(arrays, sizes)]
    processed = image_processor(images=[Image.fromarray(a) for a in resized], do_resize=False,
                                return_tensors="pt")
    grid_thw = processed["image_grid_thw"]
    grids = [(h // factor, w // factor) for h, w in sizes]

    text = tokenizer.apply_chat_template(build_messages(cameras, history), tokenize=False,
                                         add_generation_prompt=True)
    pieces = text.split(IMAGE_PAD)
    if len(pieces) != len(cameras) + 1:
        raise InputError(f"chat template produced {len(pieces) - 1} image slots for "
                         f"{len(cameras)} images")
    text = pieces[0] + "".join(IMAGE_PAD * (r * c) + p for (r, c), p in zip(grids, pieces[1:]))
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    return ModelInputs(input_ids=ids, attention_mask=torch.ones_like(ids),
                       mm_token_type_ids=(ids == image_id).int(),
                       pixel_values=processed["pixel_values"], image_grid_thw=grid_thw,
                       grids=grids, resized=resized, text=text)
