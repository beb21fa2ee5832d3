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

"""PlannerService: the drive node's planning step on the tiny model, faults included."""

import io

from fastdrivevla_ros.data.ego_history import PoseSample
from fastdrivevla_ros.pipeline.diagnostics import DriveDiagnostics, ERROR
from fastdrivevla_ros.pipeline.params import check_update, validate_config
from fastdrivevla_ros.pipeline.planner import PlannerService
from fastdrivevla_ros.pipeline.worker import FrameSet
from fastdrivevla_ros.vla.prompt import EgoHistory, EgoState
import numpy as np
from PIL import Image
import pytest
import torch

CAMERAS = ('CAM_FRONT', 'CAM_BACK')
STAMP_NS = 1_700_000_000_123_456_789


class Clock:

    def __init__(self):
        self.now = STAMP_NS / 1e9 + 0.2

    def __call__(self):
        return self.now


def jpeg_message(ts, rgb: np.ndarray, camera: str):
    """Build a sensor_msgs/CompressedImage (rosbags class: the ROS fields) of a JPEG frame."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format='JPEG', quality=90)
    sec, nanosec = divmod(STAMP_NS, 10**9)
    stamp = ts.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec)
    header = ts.types['std_msgs/msg/Header'](stamp=stamp, frame_id=camera)
    return ts.types['sensor_msgs/msg/CompressedImage'](
        header=header, format='jpeg', data=np.frombuffer(buf.getvalue(), np.uint8))


@pytest.fixture(scope='module')
def frames():
    """Two synchronised JPEG camera messages (960x540 structured frames)."""
    from rosbags.typesys import get_typestore, Stores

    ts = get_typestore(Stores.ROS2_JAZZY)
    yy, xx = np.mgrid[0:540, 0:960]
    images = {}
    for i, cam in enumerate(CAMERAS):
        rgb = np.stack([(xx + 70 * i) % 256, yy % 256, (xx * yy) % 256], -1).astype(np.uint8)
        images[cam] = jpeg_message(ts, rgb, cam)
    return images


def frame_set(images: dict) -> FrameSet:
    return FrameSet(stamp=STAMP_NS / 1e9, images=dict(images),
                    stamps_ns={c: STAMP_NS for c in images})


def make_service(model, pose=lambda stamp: None, **params):
    config = validate_config({'model': str(model), 'cameras': list(CAMERAS), 'device': 'cpu',
                              'max_pixels': 224 * 224, 'max_new_tokens': 4,
                              'constrained': False, 'pruner': 'random',
                              'pruning_ratio': 0.5} | params)
    diagnostics, logs = DriveDiagnostics(CAMERAS), []
    service = PlannerService(config, diagnostics, clock=Clock(),
                             history=lambda stamp: EgoHistory([EgoState(-2.0, 0.0, 4.0),
                                                               EgoState(0.0, 0.0, 4.0)]),
                             pose=pose, log=lambda level, message: logs.append((level, message)))
    return service, diagnostics, logs


@pytest.fixture(scope='module')
def service(tiny_model_dir):
    service, diagnostics, logs = make_service(tiny_model_dir)
    assert service.load(), logs
    return service


def test_plans_a_synced_set_with_heatmaps_and_exact_stamp(service, frames):
    """Four unconstrained tokens of a random model never parse: the failure is a result."""
    before = service.diagnostics.counts['parse_failed']
    out = service.plan(frame_set(frames))
    result = out.result
    assert result.status == 'parse_failed' and result.waypoints.shape == (6, 2)
    assert service.diagnostics.counts['parse_failed'] == before + 1
    assert [v.camera for v in result.views] == list(CAMERAS)
    assert out.stamp_ns == STAMP_NS and out.latency_ms == pytest.approx(200.0, abs=1.0)
    for view in result.views:
        rows, cols = view.grid
        assert out.heatmaps[view.camera].shape == (rows * 28, cols * 28, 3)
        assert view.num_kept == int(rows * cols * 0.5)
    assert out.mosaic.shape == (2 * 196, 3 * 336, 3)     # 2x3 tiles, unused cameras grey
    assert service.diagnostics.counts['plans'] >= 1


def test_a_random_pruner_draws_per_plan_as_the_offline_replay_does(service, frames):
    """
    The node's random pruner keeps the same tokens for the same frame, plan after plan.

    `fastdrivevla replay` draws every keyframe's tokens from the seed afresh; the node drew on
    from plan to plan, so its lockstep replay disagreed with the offline one.
    """
    first, second = (service.plan(frame_set(frames)).result for _ in range(2))
    for a, b in zip(first.views, second.views):
        assert np.array_equal(a.kept, b.kept), a.camera


def test_runtime_ratio_change_applies_to_the_next_frame(service, frames):
    service.update_config(check_update(service.config, {'pruning_ratio': 0.75}))
    result = service.plan(frame_set(frames)).result
    assert result.pruning_ratio == 0.75
    rows, cols = result.views[0].grid
    assert result.views[0].num_kept == int(rows * cols * 0.25)
    service.update_config(check_update(service.config, {'pruning_ratio': 0.5}))


def test_per_camera_ratios_set_at_runtime_give_per_camera_budgets(service, frames):
    service.update_config(check_update(service.config, {'view_ratios': [0.25, 0.75]}))
    result = service.plan(frame_set(frames)).result
    service.update_config(check_update(service.config, {'view_ratios': None}))
    kept = [v.num_kept for v in result.views]
    totals = [v.num_tokens for v in result.views]
    assert kept == [int(totals[0] * 0.75), int(totals[1] * 0.25)]


def test_heatmaps_can_be_switched_off_at_runtime(service, frames):
    service.update_config(check_update(service.config, {'publish_heatmaps': False}))
    out = service.plan(frame_set(frames))
    service.update_config(check_update(service.config, {'publish_heatmaps': True}))
    assert out.heatmaps == {} and out.mosaic is None


def test_compressed_frames_reach_the_engine_as_replay_hands_it_bag_bytes(
        service, frames, monkeypatch):
    """
    The node's CompressedImage set gives the engine the model inputs replay gives it.

    Replay hands the engine the bag's JPEG bytes, which it decodes at a reduced DCT scale before
    the resize; a JPEG decoded to full size first gives other pixels.
    """
    prepare, seen = service.engine.prepare, []
    monkeypatch.setattr(service.engine, 'prepare',
                        lambda images, history=None: seen.append(prepare(images, history))
                        or seen[-1])
    out = service.plan(frame_set(frames))
    replay = prepare({c: bytes(m.data) for c, m in frames.items()},
                     service.history(STAMP_NS / 1e9))
    node = seen[0]
    assert torch.equal(node.pixel_values, replay.pixel_values)
    assert torch.equal(node.input_ids, replay.input_ids)
    assert torch.equal(node.image_grid_thw, replay.image_grid_thw)
    for view, resized in zip(out.result.views, replay.resized):    # what heatmaps are drawn on
        assert np.array_equal(view.image, resized)
        assert out.heatmaps[view.camera].shape == resized.shape


@pytest.mark.parametrize('cut, reason', [
    (lambda data: bytes(data[: len(data) // 3]), 'corrupt or unreadable'),   # pixels cut off
    (lambda data: b'not a jpeg' + bytes(data), 'corrupt or unreadable'),     # no header
    (lambda data: b'', 'empty compressed image'),
])
def test_corrupt_jpeg_is_reported_per_camera_and_the_next_frame_plans(service, frames, cut,
                                                                      reason):
    broken = dict(frames)
    broken['CAM_BACK'] = type(frames['CAM_BACK'])(
        header=frames['CAM_BACK'].header, format='jpeg',
        data=np.frombuffer(cut(frames['CAM_BACK'].data), np.uint8))
    before = service.diagnostics.counts['input_errors']
    by_camera = dict(service.diagnostics.input_errors_by_camera)
    assert service.plan(frame_set(broken)) is None
    assert service.diagnostics.counts['input_errors'] == before + 1
    assert service.diagnostics.input_errors_by_camera['CAM_BACK'] == \
        by_camera.get('CAM_BACK', 0) + 1
    assert service.diagnostics.last_fault[2].startswith(f'CAM_BACK: {reason}')
    assert service.plan(frame_set(frames)) is not None


def test_cuda_out_of_memory_drops_the_frame_and_is_counted(service, frames, monkeypatch):
    import torch

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')

    monkeypatch.setattr(service.engine, 'plan', out_of_memory)
    assert service.plan(frame_set(frames)) is None
    assert service.diagnostics.counts['cuda_oom'] == 1
    assert service.diagnostics.last_fault[1] == 'cuda_oom'
    monkeypatch.undo()
    assert service.plan(frame_set(frames)) is not None


def test_model_load_failure_is_reported_and_frames_are_refused_not_raised(tmp_path, frames):
    service, diagnostics, logs = make_service(tmp_path / 'missing-model')
    assert service.load() is False
    assert service.state == 'failed'
    model_status = diagnostics.report(0.0)[0]
    assert model_status.level == ERROR and 'missing-model' in model_status.message
    assert any(level == 'error' and 'model load failed' in m for level, m in logs)
    assert service.plan(frame_set(frames)) is None
    assert diagnostics.counts['model_unavailable'] == 1


def test_forced_tokens_reach_diagnostics_and_switch_at_runtime(tiny_model_dir, frames):
    """The node reports tokens emitted and decode passes; forced_tokens is a runtime switch."""
    service, diagnostics, logs = make_service(tiny_model_dir, constrained=True,
                                              max_new_tokens=320, pruner='none')
    assert service.load(), logs
    forced = service.plan(frame_set(frames)).result
    assert forced.ok and forced.decode_passes <= 0.5 * forced.num_generated
    assert diagnostics.last_plan['decode_passes'] == str(forced.decode_passes)
    assert diagnostics.last_plan['num_generated'] == str(forced.num_generated)
    service.update_config(check_update(service.config, {'forced_tokens': False}))
    stepwise = service.plan(frame_set(frames)).result
    assert stepwise.ok and stepwise.decode_passes == stepwise.num_generated - 1


def test_previous_draft_follows_the_stream_and_leaves_the_plan_unchanged(tiny_model_dir, frames):
    """Draft `previous` (a runtime switch) verifies the stream's last plan, moved to now."""
    poses = iter([PoseSample(0.0, 10.0, 5.0, 0.3), PoseSample(0.0, 10.0, 5.0, 0.3)])
    service, diagnostics, logs = make_service(
        tiny_model_dir, pose=lambda stamp: next(poses), constrained=True, max_new_tokens=320,
        pruner='none', cameras=['CAM_FRONT'])
    assert service.load(), logs
    plain = service.plan(frame_set(frames)).result
    assert plain.draft_tokens == 0
    service.update_config(check_update(service.config, {'draft': 'previous'}))
    again = service.plan(frame_set(frames)).result        # same frame, same pose: its own plan
    assert again.text == plain.text and again.decode_passes <= 3
    assert again.accepted_tokens == again.draft_tokens > 0
    assert diagnostics.last_plan['accepted_tokens'] == str(again.accepted_tokens)
