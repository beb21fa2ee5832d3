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

"""Lockstep replay, ROS-free: each burst holds one whole keyframe; the next waits for its plan."""

from __future__ import annotations

from collections import Counter

from _bags import converted_bag
from _scene import require_scene
from fastdrivevla_ros.data import topics
from fastdrivevla_ros.data.bag_reader import BagFrames, MAX_CAMERA_OFFSET_S
from fastdrivevla_ros.pipeline.lockstep import keyframe_steps, LockstepController, Step
from fastdrivevla_ros.vla.prompt import CAMERAS
import pytest

S = 1_000_000_000


def test_each_step_of_a_real_bag_holds_its_keyframes_images_ego_and_ground_truth():
    bag = converted_bag(require_scene(), max_keyframes=5)
    log = BagFrames(bag).log_times()
    steps, tail = keyframe_steps(log, topics.GROUND_TRUTH, int(MAX_CAMERA_OFFSET_S * 1e9))
    assert len(steps) == 5 and sum(s.messages for s in steps) + tail == len(log)
    start = 0
    for step in steps:
        chunk = log[start:start + step.messages]
        start += step.messages
        count = Counter(topic for topic, _ in chunk)
        assert count[topics.GROUND_TRUTH] == 1
        assert [t for topic, t in chunk if topic == topics.GROUND_TRUTH] == [step.stamp_ns]
        assert all(count[topics.camera_image(c)] == 1 for c in CAMERAS), count
        assert count[topics.ODOMETRY] == count[topics.EGO_STATUS] == 1


def _controller(clock):
    steps = [Step(10 * S, 20), Step(10 * S + S // 2, 23)]
    return LockstepController(steps, tail=4, tolerance_ns=S // 10, timeout_s=30.0,
                              clock=lambda: clock[0])


def test_the_next_keyframe_plays_only_once_the_current_one_is_planned():
    clock = [0.0]
    control = _controller(clock)
    assert control.ready() and control.next_burst() == 20
    assert not control.ready()
    assert not control.on_plan(10 * S + S // 2)          # another keyframe's stamp
    clock[0] = 29.0
    assert not control.ready()
    assert control.on_plan(10 * S - 35_000_000)          # its reference camera's stamp
    assert control.ready() and control.next_burst() == 23
    assert control.on_plan(10 * S + S // 2) and control.ready()
    assert control.next_burst() == 4                     # what follows the last keyframe
    assert control.ready() and control.next_burst() is None
    assert control.timeouts == [] and control.summary().startswith('2 keyframe(s)')


def test_a_keyframe_without_a_plan_times_out_counted_and_reported():
    clock = [0.0]
    control = _controller(clock)
    control.next_burst()
    clock[0] = 30.5
    assert control.ready() and control.timeouts == [10 * S]
    assert control.next_burst() == 23
    assert '1 planned, 1 timed out' in control.summary()


@pytest.mark.parametrize('gap_ns', [0, S // 10])
def test_steps_never_overlap_when_keyframes_are_closer_than_the_window(gap_ns):
    log = [('img', 0), ('gt', 10), ('gt', 10 + gap_ns), ('img', 5 * S)]
    steps, tail = keyframe_steps(log, 'gt', S // 5)
    assert [s.messages for s in steps] == [3, 0] and tail == 1
