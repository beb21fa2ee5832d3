# Copyright 2026 The fastdrivevla_ros Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
Camera payloads -> engine images, and RGB -> bgr8 image fields, with clear InputErrors.

sensor_msgs/CompressedImage (JPEG/PNG bytes) goes to the engine as its bytes once Pillow has
checked the header (codec, size, mode): the engine decodes a JPEG at the reduced DCT scale the
model needs, as replay does with bag bytes. decode_compressed decodes fully with Pillow, which
refuses truncated files instead of returning half an image. sensor_msgs/Image goes through a
raw converter when
the caller has one (the drive node passes cv_bridge's `imgmsg_to_cv2(msg, 'rgb8')`, which knows
every image_encodings name: bayer, yuv422, 16-bit, ...); without one (cv_bridge missing, or its
binary module broken under NumPy 2) it is read straight from its buffer for the 8-bit encodings
in RAW_ENCODINGS. Either way the result is checked here, so this code stays testable without
ROS.
"""

from __future__ import annotations

from contextlib import contextmanager
import io
from typing import Any, Callable, Iterator

from fastdrivevla_ros.errors import InputError
import numpy as np
from PIL import Image, UnidentifiedImageError

MIN_SIDE = 28          # one LLM token
MAX_SIDE = 8192        # larger is not a camera frame (and could be a decompression bomb)
# encoding -> (channels, channel order to take RGB from)
RAW_ENCODINGS = {
    'rgb8': (3, (0, 1, 2)), 'bgr8': (3, (2, 1, 0)),
    'rgba8': (4, (0, 1, 2)), 'bgra8': (4, (2, 1, 0)),
    'mono8': (1, (0, 0, 0)), '8UC1': (1, (0, 0, 0)), '8UC3': (3, (2, 1, 0)),
}


def _as_bytes(data: Any) -> bytes:
    """Return a message's uint8[] field (bytes, array.array, numpy array or list) as bytes."""
    return data if isinstance(data, bytes) else bytes(data)


def _as_uint8(data: Any) -> np.ndarray:
    """View a message's data as uint8, without a copy when it supports the buffer API."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.frombuffer(bytes(data), dtype=np.uint8)


def _check_size(width: int, height: int, camera: str) -> None:
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InputError(f'{camera}: image size {width}x{height} is outside '
                         f'[{MIN_SIDE}, {MAX_SIDE}] px per side')


def _compressed_bytes(data: Any, fmt: str, camera: str) -> bytes:
    """Return CompressedImage `data` as bytes after checking `fmt`'s codec part ('' = any)."""
    codec = fmt.split(';')[-1].strip().split(' ')[0].lower() if fmt else ''
    if codec and codec not in ('jpeg', 'jpg', 'png'):
        raise InputError(f"{camera}: unsupported compressed format {fmt!r}; use 'jpeg' or 'png'")
    data = _as_bytes(data)
    if not data:
        raise InputError(f'{camera}: empty compressed image')
    return data


@contextmanager
def _opened(data: bytes, camera: str) -> Iterator[Image.Image]:
    """Open JPEG/PNG bytes (header read, size and mode checked); PIL errors -> InputError."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            _check_size(*img.size, camera)
            if img.mode not in ('RGB', 'L', 'RGBA', 'P', 'CMYK', 'YCbCr'):
                raise InputError(f'{camera}: {img.mode} image is not a colour camera frame')
            yield img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f'{camera}: corrupt or unreadable compressed image ({e})') from e


def check_compressed(data: Any, fmt: str = '', camera: str = 'camera') -> bytes:
    """
    Check CompressedImage `data` by its header alone and return it as bytes for the engine.

    Cheap (no pixels decoded): garbage, empty, oversized or non-colour images are refused here;
    pixel data cut short is found when the engine decodes it (PlannerService then names the
    camera with decode_compressed).
    """
    data = _compressed_bytes(data, fmt, camera)
    with _opened(data, camera):
        return data


def decode_compressed(data: Any, fmt: str = '', camera: str = 'camera') -> np.ndarray:
    """
    Decode CompressedImage `data` (JPEG or PNG) to [H, W, 3] uint8 RGB.

    `fmt` is the message's format string ('jpeg', 'png', 'bgr8; jpeg compressed bgr8'); only
    its codec part is used, as a check: the bytes themselves decide how they are decoded.
    """
    with _opened(_compressed_bytes(data, fmt, camera), camera) as img:
        img.load()   # raises on truncated / corrupt data
        return np.asarray(img.convert('RGB'))


def decode_raw(data: bytes, encoding: str, width: int, height: int, step: int,
               is_bigendian: int = 0, camera: str = 'camera') -> np.ndarray:
    """Read a sensor_msgs/Image buffer of an 8-bit encoding into [H, W, 3] uint8 RGB."""
    if encoding not in RAW_ENCODINGS:
        raise InputError(f'{camera}: unsupported encoding {encoding!r}; publish one of '
                         f'{sorted(RAW_ENCODINGS)} or use image_transport compressed')
    _check_size(width, height, camera)
    channels, order = RAW_ENCODINGS[encoding]
    if step < width * channels:
        raise InputError(f'{camera}: step {step} < width {width} x {channels} channels')
    buf = _as_uint8(data)
    if buf.size < step * height:
        raise InputError(f'{camera}: {buf.size} bytes for {height} rows of step {step} '
                         f'({encoding} {width}x{height} needs {step * height})')
    rows = buf[:step * height].reshape(height, step)[:, :width * channels]
    pixels = rows.reshape(height, width, channels)
    return np.ascontiguousarray(pixels[:, :, list(order)])


def decode_image_message(msg: Any, camera: str) -> np.ndarray:
    """Decode a ROS (or rosbags) CompressedImage or Image message to RGB by its fields."""
    if hasattr(msg, 'format'):
        return decode_compressed(msg.data, msg.format, camera)
    return decode_raw(msg.data, msg.encoding, msg.width, msg.height, msg.step,
                      msg.is_bigendian, camera)


RawConverter = Callable[[Any], np.ndarray]    # sensor_msgs/Image -> [H, W, 3] uint8 RGB
EngineImage = np.ndarray | bytes              # what DrivingVLA.plan takes per camera


def image_decoder(raw_converter: RawConverter | None = None) -> Callable[[str, Any], EngineImage]:
    """
    Return decode(camera, msg) -> the engine's image, raising InputError on a bad image.

    CompressedImage: its bytes, header checked (check_compressed); the engine decodes them.
    Image: [H, W, 3] uint8 RGB from `raw_converter` when given, its result checked against the
    message's size; else the numpy path (decode_raw, RAW_ENCODINGS only).
    """

    def decode(camera: str, msg: Any) -> EngineImage:
        if hasattr(msg, 'format'):
            return check_compressed(msg.data, msg.format, camera)
        if raw_converter is None:
            return decode_image_message(msg, camera)
        _check_size(msg.width, msg.height, camera)
        try:
            rgb = raw_converter(msg)
        except Exception as e:  # noqa: B902 - cv_bridge raises CvBridgeError, TypeError, ...
            raise InputError(f'{camera}: cannot convert a {msg.encoding!r} image to rgb8 '
                             f'({type(e).__name__}: {e})') from e
        rgb = np.asarray(rgb)
        if rgb.shape != (msg.height, msg.width, 3) or rgb.dtype != np.uint8:
            raise InputError(f'{camera}: {msg.encoding!r} image converted to {rgb.shape} '
                             f'{rgb.dtype}, expected ({msg.height}, {msg.width}, 3) uint8')
        return np.ascontiguousarray(rgb)

    return decode


def bgr8_fields(rgb: np.ndarray) -> dict[str, Any]:
    """sensor_msgs/Image fields (no header) of an [H, W, 3] uint8 RGB array as bgr8."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f'expected [H, W, 3] uint8 RGB, got {arr.shape} {arr.dtype}')
    h, w, _ = arr.shape
    return {'height': h, 'width': w, 'encoding': 'bgr8', 'is_bigendian': 0, 'step': w * 3,
            'data': np.ascontiguousarray(arr[:, :, ::-1]).tobytes()}
