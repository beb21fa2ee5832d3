"""Ego motion (speed, acceleration, yaw rate, steering) and ego history.

Two sources, and every result says which one it came from:
- the nuScenes CAN bus expansion (`can_bus/scene-XXXX_pose.json` 50 Hz and
  `_steeranglefeedback.json` 100 Hz), nearest message in time, as SparseDrive/VAD read it;
- otherwise derived from the ego pose track (the LIDAR_TOP ego poses, ~20 Hz, which the
  devkit tables list even when the sweep files are not shipped) by central differences.

Derived steering is the ROAD-WHEEL angle of a kinematic bicycle model (wheelbase of the
nuScenes Renault Zoe); the CAN bus gives the STEERING-WHEEL angle: the msg field
`steering_kind` keeps them apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fastdrivevla_ros.errors import DataError

WHEELBASE_M = 2.588          # Renault Zoe (nuScenes ego vehicle)
DIFF_HALF_WINDOW_S = 0.25    # central differences over +-0.25 s: smooths localisation jitter
MIN_SPEED_FOR_STEERING = 1.0  # m/s; below it the bicycle model is ill-conditioned -> 0


@dataclass
class EgoMotion:
    """Ego motion at one time, in the ego frame (x forward, y left)."""

    speed: float                        # m/s along x
    velocity: tuple[float, float]       # m/s (x, y)
    acceleration: tuple[float, float]   # m/s^2 (x, y)
    yaw_rate: float                     # rad/s, + = left
    steering: float                     # rad, + = left
    steering_kind: str                  # "steering_wheel" | "road_wheel"
    source: str                         # "can_bus" | "ego_pose"


def quaternion_yaw(q_wxyz) -> float:
    """Yaw (rotation about +z) of a [w, x, y, z] quaternion, radians."""
    w, x, y, z = (float(v) for v in q_wxyz)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) quaternion of a pure rotation about +z (ROS order)."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


def step_headings(traj, min_step: float = 0.0) -> np.ndarray:
    """traj [T, 2] -> heading [T] (rad) of each step's displacement from the previous point
    (the ego origin for the first); 0 where the step is shorter than `min_step` (or none)."""
    traj = np.asarray(traj, float).reshape(-1, 2)
    d = np.diff(np.vstack([np.zeros((1, 2)), traj]), axis=0)
    h = np.arctan2(d[:, 1], d[:, 0])
    step = np.hypot(d[:, 0], d[:, 1])
    return np.where((step < min_step) | (step == 0), 0.0, h)


def rotation_2d(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s], [s, c]])


def wrap_angle(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


class PoseTrack:
    """A time-sorted 2-D ego pose track. times [N] s, xy [N, 2] m, yaw [N] rad."""

    def __init__(self, times: np.ndarray, xy: np.ndarray, yaw: np.ndarray):
        order = np.argsort(times)
        self.t = np.asarray(times, float)[order]
        if len(self.t) < 2 or np.any(np.diff(self.t) <= 0):
            raise DataError("an ego pose track needs >= 2 poses with distinct timestamps")
        self.xy = np.asarray(xy, float)[order]
        self.yaw = np.unwrap(np.asarray(yaw, float)[order])

    def _at(self, t: float) -> tuple[np.ndarray, float]:
        t = float(np.clip(t, self.t[0], self.t[-1]))
        xy = np.array([np.interp(t, self.t, self.xy[:, 0]), np.interp(t, self.t, self.xy[:, 1])])
        return xy, float(np.interp(t, self.t, self.yaw))

    def _window(self, t: float, h: float) -> tuple[float, float]:
        return max(t - h, self.t[0]), min(t + h, self.t[-1])

    def velocity(self, t: float, h: float = DIFF_HALF_WINDOW_S) -> np.ndarray:
        """Global velocity [2] m/s by a central difference over [t-h, t+h] (one-sided at ends)."""
        a, b = self._window(t, h)
        return (self._at(b)[0] - self._at(a)[0]) / (b - a)

    def yaw_rate(self, t: float, h: float = DIFF_HALF_WINDOW_S) -> float:
        a, b = self._window(t, h)
        return (self._at(b)[1] - self._at(a)[1]) / (b - a)

    def motion(self, t: float, h: float = DIFF_HALF_WINDOW_S) -> EgoMotion:
        """Ego motion at time t derived from the poses (source 'ego_pose')."""
        _, yaw = self._at(t)
        rot = rotation_2d(yaw)
        v = self.velocity(t, h) @ rot
        a, b = self._window(t, h)
        acc = (self.velocity(b, h) - self.velocity(a, h)) / (b - a) @ rot
        yaw_rate = self.yaw_rate(t, h)
        speed = float(v[0])
        steering = 0.0
        if abs(speed) >= MIN_SPEED_FOR_STEERING:
            steering = math.atan(WHEELBASE_M * yaw_rate / speed)
        return EgoMotion(speed, (float(v[0]), float(v[1])), (float(acc[0]), float(acc[1])),
                         float(yaw_rate), float(steering), "road_wheel", "ego_pose")


def _nearest(messages: list[dict], utime: int) -> dict:
    times = np.fromiter((m["utime"] for m in messages), dtype=np.int64, count=len(messages))
    i = int(np.clip(np.searchsorted(times, utime), 1, len(times) - 1))
    return messages[i - 1] if utime - times[i - 1] <= times[i] - utime else messages[i]


class CanBusMotion:
    """Ego motion from one scene's CAN bus messages (nearest message in time)."""

    MAX_GAP_US = 100_000   # a message further than 0.1 s away is not "the" state at that time

    def __init__(self, pose_msgs: list[dict], steer_msgs: list[dict]):
        if len(pose_msgs) < 2 or len(steer_msgs) < 2:
            raise DataError("CAN bus pose/steeranglefeedback messages are missing")
        self.pose_msgs = sorted(pose_msgs, key=lambda m: m["utime"])
        self.steer_msgs = sorted(steer_msgs, key=lambda m: m["utime"])

    @classmethod
    def load(cls, dataroot, scene_name: str) -> "CanBusMotion | None":
        """The scene's CAN data, or None when the expansion or this scene is not available."""
        from pathlib import Path

        can_dir = Path(dataroot) / "can_bus"
        files = [can_dir / f"{scene_name}_{m}.json" for m in ("pose", "steeranglefeedback")]
        if not all(f.is_file() for f in files):
            return None
        from nuscenes.can_bus.can_bus_api import NuScenesCanBus

        try:
            can = NuScenesCanBus(dataroot=str(dataroot))
            return cls(can.get_messages(scene_name, "pose", print_warnings=False),
                       can.get_messages(scene_name, "steeranglefeedback", print_warnings=False))
        except DataError:
            raise
        except Exception as e:  # the devkit raises bare Exception for blacklisted scenes
            if "does not have any CAN bus data" in str(e):
                return None
            raise DataError(f"cannot read CAN bus data of {scene_name}: {e}") from e

    def motion(self, utime: int) -> EgoMotion:
        pose = _nearest(self.pose_msgs, utime)
        steer = _nearest(self.steer_msgs, utime)
        if abs(pose["utime"] - utime) > self.MAX_GAP_US:
            raise DataError(f"no CAN bus pose within 0.1 s of t={utime} us")
        vel, acc, rate = pose["vel"], pose["accel"], pose["rotation_rate"]
        return EgoMotion(float(vel[0]), (float(vel[0]), float(vel[1])),
                         (float(acc[0]), float(acc[1])), float(rate[2]),
                         float(steer["value"]), "steering_wheel", "can_bus")
