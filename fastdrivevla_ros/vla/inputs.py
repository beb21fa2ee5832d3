"""Camera images + ego history -> Qwen2.5-VL model inputs (the processor's job, done directly).

transformers' Qwen2_5_VLProcessor cannot be built without torchvision in 5.x, so we call the
tokenizer (chat template) ourselves and expand each <|image_pad|> to the number of merged
tokens, exactly as the processor does. The image half of Qwen2VLImageProcessor is done here at
the model's speed: each JPEG decoded at a reduced DCT scale (PIL draft mode) in its own thread
(PIL releases the GIL while it decodes and resizes), ONE bicubic resize straight to the grid
the processor would choose, then rescale, normalisation and patchify as torch ops on the
engine's device. Grids equal the processor's; pixel values agree within about a grey level
(test/test_inputs_processor.py measures both against transformers' own processor).
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fastdrivevla_ros.conventions import TOKEN_PX
from fastdrivevla_ros.errors import InputError
from fastdrivevla_ros.vla.prompt import EgoHistory, build_messages

IMAGE_PAD = "<|image_pad|>"


@dataclass(frozen=True)
class ProcessorGeometry:
    """What the checkpoint's preprocessor_config.json fixes: smart_resize's pixel bounds, the
    patch layout and the normalisation (read from the loaded Qwen2VLImageProcessor, never a
    constant: a checkpoint may narrow or widen the hub default)."""

    min_pixels: int
    max_pixels: int
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float

    @classmethod
    def of(cls, image_processor) -> "ProcessorGeometry":
        """Read from a Qwen2VLImageProcessor(Pil) as loaded from the checkpoint."""
        size = image_processor.size
        get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
        return cls(int(get("shortest_edge")), int(get("longest_edge")),
                   int(image_processor.patch_size), int(image_processor.merge_size),
                   int(image_processor.temporal_patch_size),
                   tuple(float(v) for v in image_processor.image_mean),
                   tuple(float(v) for v in image_processor.image_std),
                   float(image_processor.rescale_factor))

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


@dataclass
class ModelInputs:
    """input_ids/attention_mask/mm_token_type_ids: [1, L]; pixel_values: [patches, 1176] float32
    on the engine's device; image_grid_thw: [views, 3] (in 14-px patches); grids: per view
    (rows, cols) of LLM tokens; resized: per view RGB uint8 [rows*28, cols*28, 3], the frame the
    model saw (heatmaps draw on it)."""

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


def model_size(w: int, h: int, max_pixels: int, image_size: tuple[int, int] | None,
               geometry: ProcessorGeometry) -> tuple[int, int]:
    """(w, h) the model sees: target_size, then the checkpoint processor's smart_resize.

    The checkpoint's min/max pixels bound it (rounding to 28 px may overshoot the budget by a
    row, as in training); the user's own budget (the max_pixels setting or image_size) wins
    over a narrower checkpoint max_pixels, as a call-time size wins in transformers.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    tw, th = target_size(w, h, max_pixels, image_size)
    low, high = pixel_bounds(geometry, max_pixels, image_size)
    rh, rw = smart_resize(th, tw, geometry.factor, low, high)
    return rw, rh


def pixel_bounds(geometry: ProcessorGeometry, max_pixels: int,
                 image_size: tuple[int, int] | None) -> tuple[int, int]:
    """smart_resize's (min_pixels, max_pixels): the checkpoint's, its max raised to the user's
    budget (image_size's area, else the max_pixels setting) where that is larger."""
    budget = image_size[0] * image_size[1] if image_size is not None else max_pixels
    return geometry.min_pixels, max(geometry.max_pixels, budget)


def model_image(arr: np.ndarray, max_pixels: int, image_size: tuple[int, int] | None) -> Image.Image:
    """An RGB array resized to target_size (bicubic), as a PIL image."""
    img = Image.fromarray(arr)
    size = target_size(*img.size, max_pixels, image_size)
    return img if size == img.size else img.resize(size, Image.BICUBIC)


def _checked_size(wh: tuple[int, int], camera: str, max_pixels: int,
                  image_size: tuple[int, int] | None, geometry: ProcessorGeometry):
    """model_size, with smart_resize's refusals (e.g. aspect ratio over 200) as InputErrors."""
    try:
        return model_size(*wh, max_pixels, image_size, geometry)
    except ValueError as e:
        raise InputError(f"{camera}: image {wh[0]}x{wh[1]} cannot be resized for the model "
                         f"({e})") from e


def _source(image, camera: str, max_pixels: int, image_size: tuple[int, int] | None,
            geometry: ProcessorGeometry):
    """(array or not-yet-decoded PIL image, model (w, h)): headers only, cheap, checked."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            image = Image.open(io.BytesIO(bytes(image)))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot decode {camera}: not a JPEG/PNG image ({e})") from e
    if isinstance(image, Image.Image):
        if min(image.size) < TOKEN_PX:
            as_rgb_array(image, camera)   # raises the one clear message for a too-small image
        return image, _checked_size(image.size, camera, max_pixels, image_size, geometry)
    arr = as_rgb_array(image, camera)
    return arr, _checked_size((arr.shape[1], arr.shape[0]), camera, max_pixels, image_size,
                              geometry)


def _frame(image, camera: str, size: tuple[int, int]) -> np.ndarray:
    """Decode (a JPEG at a reduced DCT scale: PIL draft mode, 1/2, 1/4 or 1/8, never below
    `size`) and resize ONCE, bicubic, to `size` -> [h, w, 3] uint8. A 1600x900 frame for a
    672x392 input decodes 800x450, a quarter of the pixels."""
    if isinstance(image, np.ndarray):
        if (image.shape[1], image.shape[0]) == size:
            return image
        image = Image.fromarray(image)
    else:
        if image.format == "JPEG" and size != image.size:
            image.draft("RGB", size)
        try:
            if image.mode != "RGB":
                image = image.convert("RGB")
            image.load()
        except (OSError, ValueError) as e:
            raise InputError(f"cannot decode {camera}: corrupt image ({e})") from e
    if image.size != size:
        image = image.resize(size, Image.BICUBIC)
    return np.asarray(image)


def _patchify(frame: np.ndarray, geometry: ProcessorGeometry, scale: torch.Tensor,
              bias: torch.Tensor, out: torch.Tensor) -> None:
    """Write Qwen2VLImageProcessor's patches of one uint8 [h, w, 3] frame into `out`
    [patches, 3 * t * p * p]: rows of merge x merge patch blocks, then channel, temporal copy,
    patch row, patch column; values (x * rescale - mean) / std as one fused x * scale + bias."""
    p, m, t = geometry.patch_size, geometry.merge_size, geometry.temporal_patch_size
    h, w = frame.shape[:2]
    # the 7-D transpose on uint8 on the host: a quarter of float's bytes, and numpy's strided
    # copy is twice as fast as torch's on one CPU thread
    x = frame.reshape(h // (p * m), m, p, w // (p * m), m, p, 3).transpose(0, 3, 1, 4, 6, 2, 5)
    x = torch.from_numpy(np.ascontiguousarray(x)).to(out.device).view(-1, 3, 1, p * p)
    blocks = out.view(-1, 3, t, p * p)
    torch.addcmul(bias, x.float(), scale, out=blocks[:, :, :1])
    blocks[:, :, 1:] = blocks[:, :, :1]     # the processor repeats a still image t times


def prepare_pixels(images: list, cameras: list[str], max_pixels: int,
                   image_size: tuple[int, int] | None, geometry: ProcessorGeometry,
                   device: torch.device | str = "cpu", meanwhile=None):
    """Every view -> (uint8 frames at the model's size, float32 pixel_values on `device`,
    meanwhile's result).

    Headers are read first (bad input fails in camera order before any decode); then each view
    is decoded, resized and patchified in its own thread, straight into its rows of the output:
    PIL's decode and resize and torch's kernels release the GIL, so the views run in parallel
    even with torch on one thread. `meanwhile(sizes)` (e.g. the prompt's tokenization, which
    needs only the (w, h) sizes) runs in the calling thread while they decode.
    """
    sources = [_source(im, cam, max_pixels, image_size, geometry)
               for im, cam in zip(images, cameras)]
    area = geometry.patch_size ** 2
    rows = np.cumsum([0] + [w * h // area for _, (w, h) in sources]).tolist()
    out = torch.empty(rows[-1], 3 * geometry.temporal_patch_size * area, device=device)
    std = torch.tensor(geometry.std, dtype=torch.float64)
    scale = (geometry.rescale_factor / std).float().view(3, 1, 1).to(device)
    bias = (-torch.tensor(geometry.mean, dtype=torch.float64) / std).float().view(3, 1, 1)
    bias = bias.to(device)
    inference, threads = torch.is_inference_mode_enabled(), torch.get_num_threads()

    def view(k: int) -> np.ndarray:
        frame = _frame(sources[k][0], cameras[k], sources[k][1])
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)      # OpenMP's count is per thread: the caller's
        with torch.inference_mode(inference):   # so is the grad mode
            _patchify(frame, geometry, scale, bias, out[rows[k]:rows[k + 1]])
        return frame

    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        futures = [pool.submit(view, k) for k in range(len(sources))]
        extra = meanwhile([size for _, size in sources]) if meanwhile else None
        return [f.result() for f in futures], out, extra


def prepare_inputs(tokenizer, image_processor, cameras: list[str], images: dict,
                   history: EgoHistory, max_pixels: int,
                   image_size: tuple[int, int] | None = None,
                   device: torch.device | str = "cpu") -> ModelInputs:
    """Images (by camera) + ego history -> the model's inputs, pixel_values on `device`."""
    missing = [c for c in cameras if c not in images]
    if missing:
        raise InputError(f"missing camera image(s): {missing}")
    geometry = ProcessorGeometry.of(image_processor)

    def prompt(sizes: list[tuple[int, int]]):
        """The chat template with each <|image_pad|> expanded to its view's token count."""
        grids = [(h // geometry.factor, w // geometry.factor) for w, h in sizes]
        text = tokenizer.apply_chat_template(build_messages(cameras, history), tokenize=False,
                                             add_generation_prompt=True)
        pieces = text.split(IMAGE_PAD)
        if len(pieces) != len(cameras) + 1:
            raise InputError(f"chat template produced {len(pieces) - 1} image slots for "
                             f"{len(cameras)} images")
        text = pieces[0] + "".join(IMAGE_PAD * (r * c) + p
                                   for (r, c), p in zip(grids, pieces[1:]))
        return grids, text, tokenizer(text, return_tensors="pt",
                                      add_special_tokens=False)["input_ids"]

    resized, pixels, (grids, text, ids) = prepare_pixels(
        [images[c] for c in cameras], cameras, max_pixels, image_size, geometry, device, prompt)
    grid_thw = torch.tensor([[1, r * geometry.merge_size, c * geometry.merge_size]
                             for r, c in grids], dtype=torch.int64)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    return ModelInputs(input_ids=ids, attention_mask=torch.ones_like(ids),
                       mm_token_type_ids=(ids == image_id).int(),
                       pixel_values=pixels, image_grid_thw=grid_thw, grids=grids,
                       resized=resized, text=text)
