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
Output message fields, built into rosbags typestore classes (which mirror ROS messages).

Every builder's dict must name only real fields of the Humble and Jazzy definitions, and must
survive a CDR round trip, so the drive node's messages are right before ROS ever runs them.
"""

import math

from fastdrivevla_ros.data.typestore import get_typestore
from fastdrivevla_ros.pipeline.diagnostics import DriveDiagnostics, ERROR, OK, WARN
from fastdrivevla_ros.pipeline.images import decode_image_message
from fastdrivevla_ros.pipeline.messages import (
    diagnostic_array_fields, image_fields, marker_array_fields, path_fields,
    static_transform_fields, trajectory_fields)
from fastdrivevla_ros.vla.result import PlanResult, ViewResult
import numpy as np
import pytest

DISTROS = ('humble', 'jazzy')
NUMPY_TYPES = {'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8, 'int8': np.int8,
               'uint8': np.uint8, 'int16': np.int16, 'uint16': np.uint16,
               'int32': np.int32, 'uint32': np.uint32, 'int64': np.int64,
               'uint64': np.uint64, 'float32': np.float32, 'float64': np.float64}
STAMP_NS = 1_533_151_603_512_404_000 + 7      # nanosecond-exact source stamp


def build(ts, typename: str, fields: dict):
    """Build `typename` from a field dict; unknown names fail, missing ones get zeros."""
    _, defs = ts.fielddefs[typename]
    names = [name for name, _ in defs]
    unknown = set(fields) - set(names)
    assert not unknown, f'{typename} has no field(s) {sorted(unknown)}'
    kwargs = {}
    for name, (nodetype, detail) in defs:
        value = fields.get(name)
        kwargs[name] = convert(ts, nodetype.name, detail, value)
    return ts.types[typename](**kwargs)


def convert(ts, nodetype: str, detail, value):
    if nodetype == 'BASE':
        base = detail[0]
        if base == 'string':
            return '' if value is None else value
        return NUMPY_TYPES[base](0 if value is None else value).item()
    if nodetype == 'NAME':
        return build(ts, detail, value or {})
    (elem_type, elem_detail), _ = detail
    items = [] if value is None else value
    if elem_type.name == 'BASE' and elem_detail[0] != 'string':
        if isinstance(items, (bytes, bytearray)):
            return np.frombuffer(items, np.uint8)
        return np.asarray(items, dtype=NUMPY_TYPES[elem_detail[0]])
    if elem_type.name == 'BASE':
        return list(items)
    return [build(ts, elem_detail, v) for v in items]


def round_trip(ts, typename: str, fields: dict):
    msg = build(ts, typename, fields)
    return ts.deserialize_cdr(ts.serialize_cdr(msg, typename), typename)


def plan(status='ok', ratio=0.5) -> PlanResult:
    """Build a two-camera plan the way the engine returns one."""
    rng = np.random.default_rng(0)
    views = [ViewResult('CAM_FRONT', (14, 24), np.arange(0, 336, 2), rng.random(336),
                        np.zeros((392, 672, 3), np.uint8)),
             ViewResult('CAM_BACK', (14, 24), np.arange(168), None,
                        np.zeros((392, 672, 3), np.uint8))]
    waypoints = np.array([[2.0 * (i + 1), 0.1 * i * i] for i in range(6)])
    if status != 'ok':
        waypoints = np.zeros((6, 2))
    return PlanResult(waypoints=waypoints, status=status, text='<PLANNING>...</PLANNING>',
                      views=views, pruner='random', pruning_ratio=ratio,
                      timings_ms={'preprocess': 5.0, 'vision': 40.0, 'scoring': 1.0,
                                  'prefill': 80.0, 'decode': 300.0, 'total': 426.0},
                      reason='' if status == 'ok' else 'expected 6 waypoints, found 2',
                      num_generated=57, decode_passes=29, draft_tokens=31, accepted_tokens=12)


@pytest.mark.parametrize('distro', DISTROS)
def test_planned_trajectory_carries_plan_tokens_stamps_and_latencies(distro):
    ts = get_typestore(distro)
    fields = trajectory_fields(plan(), STAMP_NS, 'base_link',
                               {'CAM_FRONT': STAMP_NS, 'CAM_BACK': STAMP_NS + 30_000_000},
                               latency_ms=512.5)
    msg = round_trip(ts, 'fastdrivevla_ros/msg/PlannedTrajectory', fields)
    assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == STAMP_NS
    assert msg.header.frame_id == 'base_link'
    assert [(p.x, p.y, p.z) for p in msg.waypoints][5] == (12.0, 2.5, 0.0)
    assert (msg.status, msg.pruner, msg.tokens_kept, msg.tokens_total) == \
        ('ok', 'random', 336, 672)
    assert list(msg.cameras) == ['CAM_FRONT', 'CAM_BACK']
    assert msg.camera_tokens_kept.tolist() == [168, 168]
    assert msg.camera_stamps[1].nanosec == (STAMP_NS + 30_000_000) % 10**9
    assert msg.pruning_ratio == pytest.approx(0.5) and msg.waypoint_dt == pytest.approx(0.5)
    assert (msg.prefill_ms, msg.decode_ms, msg.engine_ms) == (80.0, 300.0, 426.0)
    assert msg.latency_ms == pytest.approx(512.5)
    assert (msg.num_generated, msg.decode_passes) == (57, 29)
    assert (msg.draft_tokens, msg.accepted_tokens) == (31, 12)


@pytest.mark.parametrize('distro', DISTROS)
def test_path_starts_at_the_ego_origin_and_faces_along_the_plan(distro):
    msg = round_trip(get_typestore(distro), 'nav_msgs/msg/Path',
                     path_fields(plan(), STAMP_NS, 'base_link'))
    xy = [(p.pose.position.x, p.pose.position.y) for p in msg.poses]
    assert xy[0] == (0.0, 0.0) and len(xy) == 7 and xy[-1] == (12.0, 2.5)
    for i, pose in enumerate(msg.poses[:-1]):
        q = pose.pose.orientation
        assert q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 == pytest.approx(1.0)
        yaw = 2 * math.atan2(q.z, q.w)
        dx, dy = xy[i + 1][0] - xy[i][0], xy[i + 1][1] - xy[i][1]
        assert yaw == pytest.approx(math.atan2(dy, dx))
    assert all(p.header.frame_id == 'base_link' for p in msg.poses)


def test_failed_plan_publishes_an_empty_path_so_nothing_follows_zeros():
    msg = round_trip(get_typestore('jazzy'), 'nav_msgs/msg/Path',
                     path_fields(plan('parse_failed'), STAMP_NS, 'base_link'))
    assert len(msg.poses) == 0


@pytest.mark.parametrize('distro', DISTROS)
def test_markers_clear_old_ones_then_draw_line_points_and_label(distro):
    msg = round_trip(get_typestore(distro), 'visualization_msgs/msg/MarkerArray',
                     marker_array_fields(plan(), STAMP_NS, 'base_link', latency_ms=480))
    kinds = [(m.ns, m.type, m.action) for m in msg.markers]
    assert kinds[0][2] == 3                       # DELETEALL first
    assert kinds[1:] == [('plan', 4, 0), ('plan', 7, 0), ('plan_info', 9, 0)]
    assert len(msg.markers[1].points) == 7 and len(msg.markers[2].points) == 6
    assert 'random 50% | 336/672 tokens | ok | 480 ms' == msg.markers[3].text
    assert all(m.pose.orientation.w == 1.0 for m in msg.markers[1:])


def test_failed_plan_markers_show_only_the_reason():
    msg = round_trip(get_typestore('jazzy'), 'visualization_msgs/msg/MarkerArray',
                     marker_array_fields(plan('parse_failed'), STAMP_NS, 'base_link'))
    assert [m.type for m in msg.markers[1:]] == [9]
    assert '| parse_failed: expected 6 waypoints, found 2 |' in msg.markers[1].text


@pytest.mark.parametrize('distro', DISTROS)
def test_heatmap_image_is_bgr8_and_decodes_back_to_the_rgb_overlay(distro):
    rgb = np.random.default_rng(1).integers(0, 256, (392, 672, 3), dtype=np.uint8)
    msg = round_trip(get_typestore(distro), 'sensor_msgs/msg/Image',
                     image_fields(rgb, STAMP_NS, 'CAM_FRONT'))
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('bgr8', 392, 672, 672 * 3)
    assert np.array_equal(decode_image_message(msg, 'CAM_FRONT'), rgb)


@pytest.mark.parametrize('distro', DISTROS)
def test_diagnostics_report_model_cameras_and_planner(distro):
    diag = DriveDiagnostics(['CAM_FRONT', 'CAM_BACK'], camera_timeout_s=1.0)
    diag.model_state('ready', 'tiny on cpu')
    for t in (10.0, 10.1, 10.2):
        diag.camera_message('CAM_FRONT', t)
    diag.plan_done(10.2, 'parse_failed', 700.0, 650.0)
    diag.fault('input_errors', 'CAM_BACK: corrupt or unreadable', 10.2, camera='CAM_BACK')
    fields = diagnostic_array_fields(diag.report(10.5), int(10.5e9))
    msg = round_trip(get_typestore(distro), 'diagnostic_msgs/msg/DiagnosticArray', fields)
    by_name = {s.name: s for s in msg.status}
    model, cameras, planner = (by_name[f'fastdrivevla: {n}'] for n in
                               ('model', 'cameras', 'planner'))
    assert model.level == OK and cameras.level == WARN
    assert 'CAM_BACK (never received)' in cameras.message
    values = {kv.key: kv.value for kv in planner.values}
    assert planner.level == WARN and 'CAM_BACK: corrupt' in planner.message
    assert (values['parse_failed'], values['input_errors'], values['latency_ms_max']) == \
        ('1', '1', '700.0')
    assert {kv.key: kv.value for kv in cameras.values}['CAM_FRONT rate_hz'] == '10.00'


def test_all_cameras_silent_is_an_error_and_a_failed_model_too():
    diag = DriveDiagnostics(['CAM_FRONT'], camera_timeout_s=0.5)
    diag.camera_message('CAM_FRONT', 1.0)
    diag.model_state('failed', 'CheckpointError: no config.json')
    levels = {r.name: r.level for r in diag.report(2.0)}
    assert levels['fastdrivevla: cameras'] == ERROR
    assert levels['fastdrivevla: model'] == ERROR
    assert diag.missing_cameras(2.0) == {'CAM_FRONT': 1.0}


@pytest.mark.parametrize('distro', DISTROS)
def test_static_transform_is_the_identity_from_ego_frame_to_plan_frame(distro):
    msg = round_trip(get_typestore(distro), 'geometry_msgs/msg/TransformStamped',
                     static_transform_fields('base_link', 'fastdrivevla_plan', STAMP_NS))
    assert (msg.header.frame_id, msg.child_frame_id) == ('base_link', 'fastdrivevla_plan')
    t, q = msg.transform.translation, msg.transform.rotation
    assert (t.x, t.y, t.z, q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(STAMP_NS, 10**9)
