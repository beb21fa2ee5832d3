"""Camera images + ego history -> Qwen2.5-VL model inputs (the processor's job, done directly).

transformers' Qwen2_5_VLProcessor cannot be built without torchvision in 5.x, so we call the
tokenizer (chat template) and the PIL image processor ourselves and expand each
<|image_pad|> to the number of merged tokens, exactly as the processor does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fastdrivevla_ros.errors import InputError
from fastdrivevla_ros.vla.prompt import EgoHistory, build_messages

IMAGE_PAD = "<|image_pad|>"
TOKEN_PX = 28
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


def model_image(arr: np.ndarray, max_pixels: int, image_size: tuple[int, int] | None) -> Image.Image:
    """The image as the model's training pipeline saw it before Qwen's smart_resize.

    image_size (w, h): a fixed resize (FastDriveVLA's 1596x1596 -> 57x57 = 3,249 tokens).
    Otherwise LLaMA-Factory's `image_resolution` step (Impromptu-VLA, 512*512): shrink to at most
    max_pixels keeping the aspect ratio, so a 1600x900 frame becomes 682x384 and then 672x392 =
    24x14 = 336 tokens after smart_resize's rounding.
    """
    img = Image.fromarray(arr)
    if image_size is not None:
        return img.resize(tuple(image_size), Image.BICUBIC)
    w, h = img.size
    if w * h > max_pixels:
        f = math.sqrt(max_pixels / (w * h))
        img = img.resize((int(w * f), int(h * f)), Image.BICUBIC)
    return img


def prepare_inputs(tokenizer, image_processor, cameras: list[str], images: dict,
                   history: EgoHistory, max_pixels: int,
                   image_size: tuple[int, int] | None = None) -> ModelInputs:
    missing = [c for c in cameras if c not in images]
    if missing:
        raise InputError(f"missing camera image(s): {missing}")
    arrays = [np.asarray(model_image(as_rgb_array(images[c], c), max_pixels, image_size))
              for c in cameras]
    # the processor then only rounds to multiples of 28 (smart_resize), as in training
    processed = image_processor(
        images=[Image.fromarray(a) for a in arrays], return_tensors="pt",
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PROCESSOR_PIXELS})
    grid_thw = processed["image_grid_thw"]
    merge = image_processor.merge_size
    grids = [(int(h) // merge, int(w) // merge) for _, h, w in grid_thw.tolist()]

    text = tokenizer.apply_chat_template(build_messages(cameras, history), tokenize=False,
                                         add_generation_prompt=True)
    pieces = text.split(IMAGE_PAD)
    if len(pieces) != len(cameras) + 1:
        raise InputError(f"chat template produced {len(pieces) - 1} image slots for "
                         f"{len(cameras)} images")
    text = pieces[0] + "".join(IMAGE_PAD * (r * c) + p for (r, c), p in zip(grids, pieces[1:]))
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    resized = [np.asarray(Image.fromarray(a).resize((c * TOKEN_PX, r * TOKEN_PX),
                                                    Image.BICUBIC))
               for a, (r, c) in zip(arrays, grids)]
    return ModelInputs(input_ids=ids, attention_mask=torch.ones_like(ids),
                       mm_token_type_ids=(ids == image_id).int(),
                       pixel_values=processed["pixel_values"], image_grid_thw=grid_thw,
                       grids=grids, resized=resized, text=text)
