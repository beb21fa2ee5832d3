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
Ego history for the prompt from odometry (and optional ego status) streams, ROS-free.

Shared by the drive node (live topics) and the bag reader (replay), so both prompt alike.

Poses (world/odom frame, from nav_msgs/Odometry) and ego status samples (speed, acceleration,
steering, from fastdrivevla_ros/EgoStatus) are kept for a few seconds; both paths turn messages
into samples with `odometry_sample` / `status_sample` and ask `history_at(t)` with t = the
camera set's reference stamp (the first configured camera's image stamp). For a frame at time t the
prompt needs the states at t - 3.0 s ... t - 0.0 s every 0.5 s with positions in the CURRENT ego
frame (x forward, y left), as Impromptu-VLA's prompt gives them. Motion values come from the
status sample nearest in time when there is one, else from the odometry itself.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
import math
import threading

from fastdrivevla_ros.data.ego import quaternion_yaw, wrap_angle
from fastdrivevla_ros.vla.prompt import EgoHistory, EgoState, MAX_HISTORY, WAYPOINT_DT


@dataclass(frozen=True)
class PoseSample:
    """One pose: stamp (s), x, y (m, world), yaw (rad, world), forward speed (m/s) if known."""

    stamp: float
    x: float
    y: float
    yaw: float
    speed: float | None = None


@dataclass(frozen=True)
class StatusSample:
    """Ego motion at `stamp`: speed (m/s), acceleration (fwd, left) m/s^2, steering (rad)."""

    stamp: float
    speed: float
    acceleration: tuple[float, float]
    steering: float | None = None


def _stamp_s(header) -> float:
    return (int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)) * 1e-9


def odometry_sample(odom) -> PoseSample:
    """Return the pose of a nav_msgs/Odometry (rclpy or rosbags object) with its forward speed."""
    p, q = odom.pose.pose.position, odom.pose.pose.orientation
    return PoseSample(_stamp_s(odom.header), float(p.x), float(p.y),
                      quaternion_yaw((q.w, q.x, q.y, q.z)), float(odom.twist.twist.linear.x))


def status_sample(status) -> StatusSample:
    """Return the motion in a fastdrivevla_ros/EgoStatus (rclpy or rosbags object)."""
    a = status.acceleration
    return StatusSample(_stamp_s(status.header), float(status.speed), (float(a.x), float(a.y)),
                        float(status.steering))


def _wrap(a: float) -> float:
    return float(wrap_angle(a))


class _TimeSeries:
    """Samples sorted by stamp, trimmed to `horizon_s` behind the newest."""

    def __init__(self, horizon_s: float):
        self.horizon_s = horizon_s
        self.samples: list = []
        self.stamps: list[float] = []
        self.last_added = -math.inf        # stamp of the latest arrival (not the newest stamp)

    def add(self, sample) -> None:
        self.last_added = sample.stamp
        i = bisect.bisect_right(self.stamps, sample.stamp)
        self.samples.insert(i, sample)
        self.stamps.insert(i, sample.stamp)
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - self.horizon_s)
        del self.samples[:cut], self.stamps[:cut]

    def clear(self) -> None:
        self.samples.clear()
        self.stamps.clear()

    def newest(self) -> float | None:
        return self.stamps[-1] if self.stamps else None


class EgoHistoryBuffer:
    """
    Thread-safe ego samples and the prompt history at a given time.

    tolerance_s: how far outside the buffered poses a lookup may reach, and how far the
    nearest status sample may be (a state with no pose is left out rather than invented).
    A sample more than REWIND_S older than the one that arrived before it on its stream clears
    the buffer (time went backwards: a bag restarted).
    """

    REWIND_S = 1.0

    def __init__(self, horizon_s: float = 4.0, tolerance_s: float = 0.1):
        self.tolerance_s = tolerance_s
        self._poses = _TimeSeries(horizon_s)
        self._status = _TimeSeries(horizon_s)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._poses.samples)

    @property
    def has_status(self) -> bool:
        """Return True once an ego status sample arrived (since the last clear)."""
        return bool(self._status.samples)

    def add_pose(self, sample: PoseSample) -> None:
        """Insert an odometry pose (out-of-order ones are placed by stamp)."""
        if not all(math.isfinite(v) for v in (sample.stamp, sample.x, sample.y, sample.yaw,
                                              sample.speed or 0.0)):
            raise ValueError(f'non-finite odometry sample: {sample}')
        self._add(self._poses, sample)

    def _add(self, series: _TimeSeries, sample) -> None:
        with self._arrived:
            if sample.stamp < series.last_added - self.REWIND_S:
                self._poses.clear()
                self._status.clear()
            series.add(sample)
            self._arrived.notify_all()

    def add_status(self, sample: StatusSample) -> None:
        """Insert an ego status sample (speed, acceleration, steering)."""
        values = (sample.stamp, sample.speed, *sample.acceleration, sample.steering or 0.0)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f'non-finite ego status sample: {sample}')
        self._add(self._status, sample)

    def covers(self, t: float, status: bool = True) -> bool:
        """
        Return True once a pose (and, with `status`, a status sample) at or after t arrived.

        history_at(t) reads only the poses bracketing each state and the status samples
        nearest to them, so once both streams reach t, later samples cannot change it: this
        is what makes the node's history equal the offline replay's whatever the timing.
        """
        with self._lock:
            return self._covers_locked(t, status)

    def wait_for(self, t: float, timeout_s: float, status: bool = True) -> bool:
        """Block until covers(t, status) or `timeout_s` (wall clock) passed; return covers."""
        with self._arrived:
            return self._arrived.wait_for(lambda: self._covers_locked(t, status), timeout_s)

    def history_when_covered(self, t: float, timeout_s: float, status: bool = True):
        """Return (history_at(t) once covers(t, status) or after `timeout_s`, covered)."""
        covered = self.wait_for(t, timeout_s, status)
        return self.history_at(t), covered

    def _covers_locked(self, t: float, status: bool) -> bool:
        series = (self._poses, self._status) if status else (self._poses,)
        return all(s.newest() is not None and s.newest() >= t for s in series)

    def clear(self) -> None:
        """Forget everything (time jumped backwards, e.g. a bag restarted)."""
        with self._lock:
            self._poses.clear()
            self._status.clear()

    def pose_at(self, t: float) -> PoseSample | None:
        """Return the pose interpolated at t, or None outside the poses (± tolerance)."""
        with self._lock:
            samples, stamps = list(self._poses.samples), list(self._poses.stamps)
        if not samples or not stamps[0] - self.tolerance_s <= t <= stamps[-1] + self.tolerance_s:
            return None
        i = bisect.bisect_left(stamps, t)
        if i == 0 or i == len(samples):
            return samples[min(i, len(samples) - 1)]
        a, b = samples[i - 1], samples[i]
        f = (t - a.stamp) / (b.stamp - a.stamp) if b.stamp > a.stamp else 0.0
        speed = None if a.speed is None or b.speed is None else a.speed + f * (b.speed - a.speed)
        return PoseSample(t, a.x + f * (b.x - a.x), a.y + f * (b.y - a.y),
                          a.yaw + f * _wrap(b.yaw - a.yaw), speed)

    def status_at(self, t: float) -> StatusSample | None:
        """Return the status sample nearest to t, if within the tolerance."""
        with self._lock:
            samples, stamps = list(self._status.samples), list(self._status.stamps)
        if not samples:
            return None
        i = bisect.bisect_left(stamps, t)
        near = [j for j in (i - 1, i) if 0 <= j < len(samples)]
        j = min(near, key=lambda k: abs(stamps[k] - t))
        return samples[j] if abs(stamps[j] - t) <= self.tolerance_s else None

    def history_at(self, t: float, steps: int = MAX_HISTORY) -> EgoHistory | None:
        """
        Return states at t - (steps-1)*0.5 s ... t (oldest first) in the ego frame at t.

        None when there is no pose around t: the engine then prompts a standing start.
        Without a status sample, acceleration is (d speed / dt, speed * yaw rate) over the
        0.5 s before each state, from odometry.
        """
        now = self.pose_at(t)
        if now is None:
            return None
        cos, sin = math.cos(now.yaw), math.sin(now.yaw)
        states = []
        for k in range(steps - 1, -1, -1):
            pose = self.pose_at(t - k * WAYPOINT_DT)
            if pose is None:
                continue
            dx, dy = pose.x - now.x, pose.y - now.y
            speed, accel, steering = self._motion(pose, t - (k + 1) * WAYPOINT_DT)
            states.append(EgoState(x=cos * dx + sin * dy, y=-sin * dx + cos * dy,
                                   velocity=speed, acceleration=accel, steering=steering))
        return EgoHistory(states)

    def _motion(self, pose: PoseSample, t_before: float):
        status = self.status_at(pose.stamp)
        if status is not None:
            return status.speed, status.acceleration, status.steering
        prev = self.pose_at(t_before)
        if pose.speed is None or prev is None or prev.speed is None:
            return pose.speed, None, None
        yaw_rate = _wrap(pose.yaw - prev.yaw) / WAYPOINT_DT
        return pose.speed, ((pose.speed - prev.speed) / WAYPOINT_DT, pose.speed * yaw_rate), None
