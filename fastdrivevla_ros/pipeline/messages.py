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
PlanResult -> plain field dicts of the node's output messages (ROS-free).

Each builder returns nested dicts/lists shaped exactly like the ROS message (field names and
nesting), so ros/conversions.py fills rclpy messages with rosidl_runtime_py.set_message_fields
and the tests build the same dicts into rosbags typestore classes, which mirror ROS fields.
Stamps travel as integer nanoseconds so the source frame stamp is copied exactly.
"""

from __future__ import annotations

from typing import Any, Sequence

from fastdrivevla_ros.data.ego import step_headings, yaw_quaternion
from fastdrivevla_ros.pipeline.diagnostics import StatusReport
from fastdrivevla_ros.pipeline.images import bgr8_fields
from fastdrivevla_ros.vla.prompt import WAYPOINT_DT
from fastdrivevla_ros.vla.result import PlanResult
import numpy as np

STAGES = ('preprocess', 'vision', 'scoring', 'prefill', 'decode')
# visualization_msgs/Marker constants (same in Humble and Jazzy)
LINE_STRIP, SPHERE_LIST, TEXT_VIEW_FACING = 4, 7, 9
ADD, DELETEALL = 0, 3
OK_COLOR = {'r': 0.1, 'g': 0.85, 'b': 0.2, 'a': 1.0}
FAILED_COLOR = {'r': 0.6, 'g': 0.6, 'b': 0.6, 'a': 1.0}
WHITE = {'r': 1.0, 'g': 1.0, 'b': 1.0, 'a': 1.0}


def time_fields(stamp_ns: int) -> dict[str, int]:
    """builtin_interfaces/Time of a non-negative integer nanosecond stamp."""
    if stamp_ns < 0:
        raise ValueError(f'negative stamp {stamp_ns} ns')
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return {'sec': sec, 'nanosec': nanosec}


def header_fields(stamp_ns: int, frame_id: str) -> dict[str, Any]:
    """Return std_msgs/Header fields."""
    return {'stamp': time_fields(stamp_ns), 'frame_id': frame_id}


def static_transform_fields(parent: str, child: str, stamp_ns: int = 0) -> dict[str, Any]:
    """Return geometry_msgs/TransformStamped fields of the identity `parent` -> `child`."""
    return {'header': header_fields(stamp_ns, parent), 'child_frame_id': child,
            'transform': {'translation': {'x': 0.0, 'y': 0.0, 'z': 0.0},
                          'rotation': {'x': 0.0, 'y': 0.0, 'z': 0.0, 'w': 1.0}}}


def _point(x: float, y: float, z: float = 0.0) -> dict[str, float]:
    return {'x': float(x), 'y': float(y), 'z': float(z)}


def _yaw_quaternion(yaw: float) -> dict[str, float]:
    return dict(zip('xyzw', yaw_quaternion(yaw)))


def trajectory_fields(result: PlanResult, stamp_ns: int, frame_id: str,
                      camera_stamps_ns: dict[str, int] | None = None,
                      latency_ms: float = 0.0) -> dict[str, Any]:
    """fastdrivevla_ros/PlannedTrajectory fields of one plan (see msg/PlannedTrajectory.msg)."""
    stamps = camera_stamps_ns or {}
    timings = result.timings_ms
    fields = {
        'header': header_fields(stamp_ns, frame_id),
        'waypoints': [_point(x, y) for x, y in np.asarray(result.waypoints, dtype=float)],
        'waypoint_dt': WAYPOINT_DT,
        'status': result.status, 'reason': result.reason, 'text': result.text,
        'pruner': result.pruner, 'pruning_ratio': float(result.pruning_ratio),
        'tokens_kept': result.tokens_kept, 'tokens_total': result.tokens_total,
        'cameras': [v.camera for v in result.views],
        'camera_tokens_kept': [v.num_kept for v in result.views],
        'camera_tokens_total': [v.num_tokens for v in result.views],
        'camera_stamps': [time_fields(stamps.get(v.camera, stamp_ns)) for v in result.views],
        'num_generated': int(result.num_generated),
        'decode_passes': int(result.decode_passes),
        'draft_tokens': int(result.draft_tokens),
        'accepted_tokens': int(result.accepted_tokens),
        'engine_ms': float(timings.get('total', sum(timings.get(s, 0.0) for s in STAGES))),
        'latency_ms': float(latency_ms),
    }
    fields.update({f'{s}_ms': float(timings.get(s, 0.0)) for s in STAGES})
    return fields


def path_fields(result: PlanResult, stamp_ns: int, frame_id: str) -> dict[str, Any]:
    """
    nav_msgs/Path from the ego origin through the waypoints (empty unless status is ok).

    Each pose faces along its segment so RViz arrows show the heading.
    """
    header = header_fields(stamp_ns, frame_id)
    if not result.ok:
        return {'header': header, 'poses': []}
    waypoints = np.asarray(result.waypoints, dtype=float)
    pts = np.vstack([[0.0, 0.0], waypoints])
    steps = step_headings(waypoints)          # heading of the step into each waypoint
    yaws = [*steps, steps[-1]]                # each pose faces its next step; the last its own
    poses = []
    for (x, y), yaw in zip(pts, yaws):
        pose = {'position': _point(x, y), 'orientation': _yaw_quaternion(float(yaw))}
        poses.append({'header': header, 'pose': pose})
    return {'header': header, 'poses': poses}


def _marker(header: dict, ns: str, marker_id: int, kind: int, **fields) -> dict[str, Any]:
    marker = {'header': header, 'ns': ns, 'id': marker_id, 'type': kind, 'action': ADD,
              'pose': {'position': _point(0, 0), 'orientation': _yaw_quaternion(0.0)},
              'scale': {'x': 1.0, 'y': 1.0, 'z': 1.0}, 'color': WHITE}
    marker.update(fields)
    return marker


def marker_array_fields(result: PlanResult, stamp_ns: int, frame_id: str,
                        latency_ms: float = 0.0) -> dict[str, Any]:
    """visualization_msgs/MarkerArray: DELETEALL, then the plan line + points and a label."""
    header = header_fields(stamp_ns, frame_id)
    markers = [{'header': header, 'ns': '', 'id': 0, 'action': DELETEALL}]
    status = result.status if result.ok else f'{result.status}: {result.reason}'
    label = (f'{result.pruner} {result.pruning_ratio:.0%} | '
             f'{result.tokens_kept}/{result.tokens_total} tokens | {status} | '
             f'{latency_ms:.0f} ms')
    if result.ok:
        pts = [_point(0, 0)] + [_point(x, y) for x, y in np.asarray(result.waypoints, float)]
        markers.append(_marker(header, 'plan', 0, LINE_STRIP, points=pts, color=OK_COLOR,
                               scale={'x': 0.25, 'y': 0.0, 'z': 0.0}))
        markers.append(_marker(header, 'plan', 1, SPHERE_LIST, points=pts[1:], color=OK_COLOR,
                               scale={'x': 0.6, 'y': 0.6, 'z': 0.6}))
    markers.append(_marker(header, 'plan_info', 2, TEXT_VIEW_FACING, text=label,
                           color=OK_COLOR if result.ok else FAILED_COLOR,
                           pose={'position': _point(-2.0, 0, 3.0),     # just behind the ego
                                 'orientation': _yaw_quaternion(0.0)},
                           scale={'x': 0.0, 'y': 0.0, 'z': 1.6}))      # ~16 px in drive.rviz
    return {'markers': markers}


def image_fields(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> dict[str, Any]:
    """sensor_msgs/Image (bgr8) of an RGB heatmap or mosaic."""
    return {'header': header_fields(stamp_ns, frame_id), **bgr8_fields(rgb)}


def diagnostic_array_fields(reports: Sequence[StatusReport], stamp_ns: int) -> dict[str, Any]:
    """diagnostic_msgs/DiagnosticArray; `level` stays an int (rclpy wants bytes: convert)."""
    return {'header': header_fields(stamp_ns, ''),
            'status': [{'level': int(r.level), 'name': r.name, 'message': r.message,
                        'hardware_id': r.hardware_id,
                        'values': [{'key': k, 'value': str(v)} for k, v in r.values.items()]}
                       for r in reports]}
