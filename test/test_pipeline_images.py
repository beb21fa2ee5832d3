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

"""Camera payload decoding: JPEG/PNG and raw encodings to RGB, with clear errors."""

import io
from types import SimpleNamespace

from fastdrivevla_ros.errors import InputError
from fastdrivevla_ros.pipeline.images import (
    bgr8_fields, check_compressed, decode_compressed, decode_image_message, decode_raw,
    image_decoder)
import numpy as np
from PIL import Image
import pytest


@pytest.fixture
def rgb():
    """Build a structured 96x160 RGB frame (smooth, so JPEG keeps it close)."""
    yy, xx = np.mgrid[0:96, 0:160]
    return np.stack([xx * 255 // 159, yy * 255 // 95, (xx + yy) % 256], -1).astype(np.uint8)


def encode(rgb, fmt='JPEG') -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def test_jpeg_decodes_to_rgb_of_the_same_frame(rgb):
    out = decode_compressed(encode(rgb), 'jpeg', 'CAM_FRONT')
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 4


def test_png_and_image_transport_format_strings_are_accepted(rgb):
    assert np.array_equal(decode_compressed(encode(rgb, 'PNG'), 'rgb8; png compressed rgb8'), rgb)
    assert decode_compressed(encode(rgb), 'bgr8; jpeg compressed bgr8').shape == rgb.shape


def test_truncated_jpeg_is_an_input_error_not_half_an_image(rgb):
    data = encode(rgb)
    with pytest.raises(InputError, match='CAM_BACK: corrupt or unreadable'):
        decode_compressed(data[: len(data) // 2], 'jpeg', 'CAM_BACK')


@pytest.mark.parametrize('data, fmt, reason', [
    (b'not an image at all', 'jpeg', 'corrupt or unreadable'),
    (b'', 'jpeg', 'empty compressed image'),
    (b'\x00' * 10, 'theora', 'unsupported compressed format'),
])
@pytest.mark.parametrize('read', [decode_compressed, check_compressed])
def test_garbage_and_unsupported_formats_are_rejected(data, fmt, reason, read):
    with pytest.raises(InputError, match=reason):
        read(data, fmt, 'CAM_FRONT')


@pytest.mark.parametrize('read', [decode_compressed, check_compressed])
def test_image_smaller_than_one_token_is_rejected(read):
    with pytest.raises(InputError, match='10x10 is outside'):
        read(encode(np.zeros((10, 10, 3), np.uint8), 'PNG'), 'png')


def test_raw_bgr8_with_row_padding_is_read_as_rgb(rgb):
    h, w, _ = rgb.shape
    step = w * 3 + 8
    rows = np.zeros((h, step), np.uint8)
    rows[:, :w * 3] = rgb[:, :, ::-1].reshape(h, -1)
    out = decode_raw(rows.tobytes(), 'bgr8', w, h, step)
    assert np.array_equal(out, rgb)


def test_raw_rgb8_and_mono8(rgb):
    h, w, _ = rgb.shape
    assert np.array_equal(decode_raw(rgb.tobytes(), 'rgb8', w, h, w * 3), rgb)
    gray = rgb[:, :, 0].copy()
    out = decode_raw(gray.tobytes(), 'mono8', w, h, w)
    assert np.array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


@pytest.mark.parametrize('encoding, step, cut, reason', [
    ('16UC1', 320, 0, "unsupported encoding '16UC1'"),
    ('bgr8', 100, 0, 'step 100 < width 160 x 3 channels'),
    ('bgr8', 480, 480, 'bytes for 96 rows of step 480'),
])
def test_raw_wrong_encoding_or_size_is_rejected(rgb, encoding, step, cut, reason):
    data = rgb.tobytes()[:len(rgb.tobytes()) - cut]
    with pytest.raises(InputError, match=reason):
        decode_raw(data, encoding, 160, 96, step, camera='CAM_FRONT')


def test_bgr8_fields_round_trip_through_raw_decoding(rgb):
    fields = bgr8_fields(rgb)
    assert fields['encoding'] == 'bgr8' and fields['step'] == 160 * 3
    back = decode_raw(fields['data'], fields['encoding'], fields['width'], fields['height'],
                      fields['step'])
    assert np.array_equal(back, rgb)


def test_decodes_ros_shaped_messages(rgb):
    """Decode rosbags typestore messages, which have exactly the ROS message fields."""
    from rosbags.typesys import get_typestore, Stores

    ts = get_typestore(Stores.ROS2_HUMBLE)
    header = ts.types['std_msgs/msg/Header'](
        stamp=ts.types['builtin_interfaces/msg/Time'](sec=1, nanosec=2), frame_id='CAM_FRONT')
    compressed = ts.types['sensor_msgs/msg/CompressedImage'](
        header=header, format='jpeg', data=np.frombuffer(encode(rgb), np.uint8))
    assert decode_image_message(compressed, 'CAM_FRONT').shape == rgb.shape
    fields = bgr8_fields(rgb)
    raw = ts.types['sensor_msgs/msg/Image'](
        header=header, height=fields['height'], width=fields['width'], encoding='bgr8',
        is_bigendian=0, step=fields['step'], data=np.frombuffer(fields['data'], np.uint8))
    assert np.array_equal(decode_image_message(raw, 'CAM_FRONT'), rgb)


def yuv422_message(rgb):
    """Build a UYVY (image_encodings 'yuv422') sensor_msgs/Image-shaped message of `rgb`."""
    cv2 = pytest.importorskip('cv2')

    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)
    u = yuv[:, 0::2, 1].astype(int) + yuv[:, 1::2, 1]
    v = yuv[:, 0::2, 2].astype(int) + yuv[:, 1::2, 2]
    uyvy = np.stack([u // 2, yuv[:, 0::2, 0], v // 2, yuv[:, 1::2, 0]], -1).astype(np.uint8)
    h, w, _ = rgb.shape
    return SimpleNamespace(encoding='yuv422', width=w, height=h, step=2 * w, is_bigendian=0,
                           data=uyvy.tobytes())


def opencv_converter(msg):
    """Stand in for cv_bridge's imgmsg_to_cv2(msg, 'rgb8') on UYVY (what cvtColor2 runs)."""
    cv2 = pytest.importorskip('cv2')

    uyvy = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 2)
    return cv2.cvtColor(uyvy, cv2.COLOR_YUV2RGB_UYVY)


def test_raw_images_go_through_the_converter_when_there_is_one(rgb):
    """cv_bridge at the ROS boundary: encodings the numpy path lacks (yuv422) decode."""
    msg = yuv422_message(rgb)
    with pytest.raises(InputError, match="unsupported encoding 'yuv422'"):
        image_decoder()('CAM_FRONT', msg)                      # the numpy fallback
    out = image_decoder(opencv_converter)('CAM_FRONT', msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 12          # chroma is subsampled


def test_compressed_images_reach_the_engine_as_their_bytes_never_the_converter(rgb):
    """The engine decodes JPEG bytes at the scale it needs; raw images stay arrays."""
    def refuse(msg):
        raise AssertionError('the converter saw a CompressedImage')

    data = encode(rgb)
    msg = SimpleNamespace(format='jpeg', data=np.frombuffer(data, np.uint8))
    assert image_decoder(refuse)('CAM_FRONT', msg) == data
    assert image_decoder()('CAM_FRONT', msg) == data
    raw = SimpleNamespace(encoding='rgb8', width=160, height=96, step=480, is_bigendian=0,
                          data=rgb.tobytes())
    assert np.array_equal(image_decoder()('CAM_FRONT', raw), rgb)


def test_converter_failures_and_bad_results_are_input_errors(rgb):
    msg = yuv422_message(rgb)

    def fails(msg):
        raise TypeError('Unsupported conversion from [yuv422] to [rgb8]')

    with pytest.raises(InputError, match="CAM_BACK: cannot convert a 'yuv422' image to rgb8"):
        image_decoder(fails)('CAM_BACK', msg)
    with pytest.raises(InputError, match=r'converted to \(.*\) uint16'):
        image_decoder(lambda m: np.zeros((m.height, m.width, 3), np.uint16))('CAM_BACK', msg)
    tiny = SimpleNamespace(encoding='yuv422', width=8, height=8, step=16, data=b'\0' * 128)
    with pytest.raises(InputError, match='outside'):
        image_decoder(opencv_converter)('CAM_BACK', tiny)
