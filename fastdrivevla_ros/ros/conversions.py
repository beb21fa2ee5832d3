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
ROS messages <-> core types, at the boundary only.

The field dicts come from fastdrivevla_ros.pipeline.messages (tested ROS-free against the
message definitions); here they become rclpy messages, explicitly per type so a reader sees
every field. Incoming odometry / ego status / ground truth become plain core values.
"""

import array

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from fastdrivevla_ros.msg import PlannedTrajectory
from geometry_msgs.msg import (
    Point, Pose, PoseStamped, Quaternion, Transform, TransformStamped, Vector3)
from nav_msgs.msg import Path
from sensor_msgs.msg import Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

try:        # optional: the numpy path in pipeline.images is the fallback
    from cv_bridge import CvBridge
except Exception as e:  # noqa: B902 - ImportError, or its binary module failing under NumPy 2
    CvBridge, CV_BRIDGE_PROBLEM = None, f'{type(e).__name__}: {e}'
else:
    CV_BRIDGE_PROBLEM = ''


def raw_image_converter():
    """Return cv_bridge's sensor_msgs/Image -> rgb8 array converter, or None without cv_bridge."""
    if CvBridge is None:
        return None
    bridge = CvBridge()
    return lambda msg: bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8')


def stamp_ns(stamp) -> int:
    """Return a builtin_interfaces/Time as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def time_msg(fields: dict) -> Time:
    return Time(sec=int(fields['sec']), nanosec=int(fields['nanosec']))


def header_msg(fields: dict) -> Header:
    return Header(stamp=time_msg(fields['stamp']), frame_id=fields['frame_id'])


def point_msg(fields: dict) -> Point:
    return Point(x=float(fields['x']), y=float(fields['y']), z=float(fields['z']))


def pose_msg(fields: dict) -> Pose:
    q = fields['orientation']
    return Pose(position=point_msg(fields['position']),
                orientation=Quaternion(x=q['x'], y=q['y'], z=q['z'], w=q['w']))


def trajectory_msg(fields: dict) -> PlannedTrajectory:
    """Return fastdrivevla_ros/PlannedTrajectory from pipeline.messages.trajectory_fields."""
    scalars = {k: v for k, v in fields.items()
               if k not in ('header', 'waypoints', 'camera_stamps')}
    return PlannedTrajectory(
        header=header_msg(fields['header']),
        waypoints=[point_msg(p) for p in fields['waypoints']],
        camera_stamps=[time_msg(t) for t in fields['camera_stamps']],
        **scalars)


def path_msg(fields: dict) -> Path:
    return Path(header=header_msg(fields['header']),
                poses=[PoseStamped(header=header_msg(p['header']), pose=pose_msg(p['pose']))
                       for p in fields['poses']])


def transform_msg(fields: dict) -> TransformStamped:
    """Return geometry_msgs/TransformStamped from pipeline.messages.static_transform_fields."""
    t, q = fields['transform']['translation'], fields['transform']['rotation']
    return TransformStamped(
        header=header_msg(fields['header']), child_frame_id=fields['child_frame_id'],
        transform=Transform(translation=Vector3(x=t['x'], y=t['y'], z=t['z']),
                            rotation=Quaternion(x=q['x'], y=q['y'], z=q['z'], w=q['w'])))


def marker_msg(fields: dict) -> Marker:
    marker = Marker(header=header_msg(fields['header']), ns=fields['ns'], id=fields['id'],
                    action=fields['action'])
    if 'type' in fields:
        marker.type = fields['type']
        marker.pose = pose_msg(fields['pose'])
        s, c = fields['scale'], fields['color']
        marker.scale = Vector3(x=s['x'], y=s['y'], z=s['z'])
        marker.color = ColorRGBA(r=c['r'], g=c['g'], b=c['b'], a=c['a'])
        marker.points = [point_msg(p) for p in fields.get('points', [])]
        marker.text = fields.get('text', '')
    return marker


def marker_array_msg(fields: dict) -> MarkerArray:
    return MarkerArray(markers=[marker_msg(m) for m in fields['markers']])


def image_msg(fields: dict) -> Image:
    """Return sensor_msgs/Image; data goes in as array('B') (rclpy's no-copy-check path)."""
    return Image(header=header_msg(fields['header']), height=fields['height'],
                 width=fields['width'], encoding=fields['encoding'],
                 is_bigendian=fields['is_bigendian'], step=fields['step'],
                 data=array.array('B', fields['data']))


def diagnostic_array_msg(fields: dict) -> DiagnosticArray:
    """Return diagnostic_msgs/DiagnosticArray; rclpy wants `level` as one byte, not an int."""
    return DiagnosticArray(
        header=header_msg(fields['header']),
        status=[DiagnosticStatus(level=bytes([s['level']]), name=s['name'],
                                 message=s['message'], hardware_id=s['hardware_id'],
                                 values=[KeyValue(key=kv['key'], value=kv['value'])
                                         for kv in s['values']])
                for s in fields['status']])
