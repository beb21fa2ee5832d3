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

"""Prompt ego history from odometry: positions in the current ego frame at 0.5 s steps."""

import math

from fastdrivevla_ros.data.ego import quaternion_yaw
from fastdrivevla_ros.data.ego_history import EgoHistoryBuffer, PoseSample, StatusSample
import pytest


def drive_north(buffer: EgoHistoryBuffer, t_end: float, speed: float = 5.0, hz: float = 20.0):
    """Feed odometry of a car heading world +y (yaw 90 deg) at constant speed until t_end."""
    n = int(t_end * hz)
    for i in range(n + 1):
        t = i / hz
        buffer.add_pose(PoseSample(t, 100.0, 200.0 + speed * t, math.pi / 2, speed))


def test_straight_drive_history_is_behind_the_car_in_its_own_frame():
    buffer = EgoHistoryBuffer()
    drive_north(buffer, 4.0)
    history = buffer.history_at(4.0)
    assert len(history.states) == 7
    for k, state in enumerate(reversed(history.states)):     # current first
        assert state.x == pytest.approx(-5.0 * 0.5 * k, abs=1e-6)
        assert state.y == pytest.approx(0.0, abs=1e-6)
        assert state.velocity == pytest.approx(5.0)
        assert state.acceleration == pytest.approx((0.0, 0.0), abs=1e-6)


def test_turning_left_puts_past_positions_behind_on_the_inside_of_the_curve():
    """On a left-hand circle of radius R the pose d rad ago is at (-R sin d, R (1 - cos d))."""
    buffer = EgoHistoryBuffer()
    radius, speed = 20.0, 5.0
    for i in range(81):               # counter-clockwise circle, 4 s at 20 Hz
        t = i / 20
        a = speed * t / radius
        buffer.add_pose(PoseSample(t, radius * math.sin(a), radius * (1 - math.cos(a)), a,
                                   speed))
    history = buffer.history_at(4.0)
    oldest, d = history.states[0], speed * 3.0 / radius
    expected = (-radius * math.sin(d), radius * (1 - math.cos(d)))
    assert (oldest.x, oldest.y) == pytest.approx(expected, abs=1e-2)
    yaw_rate = speed / radius
    assert history.states[-1].acceleration == pytest.approx((0.0, speed * yaw_rate), abs=1e-3)


def test_no_odometry_means_no_history_and_short_buffers_give_short_histories():
    buffer = EgoHistoryBuffer()
    assert buffer.history_at(10.0) is None
    for i in range(21):                           # only 1 s of odometry
        buffer.add_pose(PoseSample(9.0 + i / 20, 0.0, 0.0, 0.0, 0.0))
    assert len(buffer.history_at(10.0).states) == 3      # t-1.0, t-0.5, t
    assert buffer.history_at(12.0) is None               # far beyond the newest pose


def test_ego_status_supplies_speed_acceleration_and_steering():
    buffer = EgoHistoryBuffer()
    drive_north(buffer, 4.0)
    buffer.add_status(StatusSample(4.02, 5.1, (0.3, -0.1), 0.05))
    current = buffer.history_at(4.0).states[-1]
    assert (current.velocity, current.acceleration, current.steering) == \
        (5.1, (0.3, -0.1), 0.05)
    assert buffer.history_at(4.0).states[0].steering is None   # no status near t-3 s


def test_out_of_order_samples_are_placed_by_stamp_and_old_ones_trimmed():
    buffer = EgoHistoryBuffer(horizon_s=1.0)
    for t in (0.0, 2.0, 1.0, 1.5, 0.5):
        buffer.add_pose(PoseSample(t, t, 0.0, 0.0, 1.0))
    assert len(buffer) == 3                       # 1.0, 1.5, 2.0 within 1 s of the newest
    assert buffer.pose_at(1.25).x == pytest.approx(1.25)
    with pytest.raises(ValueError, match='non-finite'):
        buffer.add_pose(PoseSample(3.0, float('nan'), 0.0, 0.0))


def test_yaw_from_quaternion():
    half = math.radians(30) / 2
    assert quaternion_yaw((math.cos(half), 0, 0, math.sin(half))) == \
        pytest.approx(math.radians(30))
