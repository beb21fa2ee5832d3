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
The drive node: six synchronised cameras in, a planned trajectory and token heatmaps out.

Thin on purpose: parameters come from pipeline.params, the worker from pipeline.worker, planning
and fault handling from pipeline.planner, message fields from pipeline.messages. This module
only wires them to rclpy, message_filters and the message classes.

Threads: the executor runs the subscriptions (the synchroniser callback only submits the newest
complete set), the diagnostics timer (on a steady clock: under use_sim_time /clock may stop or
not have started) and parameter services; one worker thread plans and publishes through an
OutputGate that `close()` shuts; one loader thread reads the checkpoint at start.
"""

import array
import difflib
import sys
import threading

from diagnostic_msgs.msg import DiagnosticArray
from fastdrivevla_ros.data.ego_history import EgoHistoryBuffer, odometry_sample, status_sample
from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.msg import EgoStatus, PlannedTrajectory
from fastdrivevla_ros.pipeline import messages
from fastdrivevla_ros.pipeline.diagnostics import DriveDiagnostics
from fastdrivevla_ros.pipeline.images import image_decoder, RAW_ENCODINGS
from fastdrivevla_ros.pipeline.log import leveled_log
from fastdrivevla_ros.pipeline.params import (
    descriptor_fields, NODE_NAME, NodeConfig, PARAMETERS, RuntimeUpdates, SPECS,
    validate_config)
from fastdrivevla_ros.pipeline.planner import PlannerService, PlanOutput
from fastdrivevla_ros.pipeline.worker import FrameSet, LatestSetWorker, OutputGate
from fastdrivevla_ros.ros import conversions
from fastdrivevla_ros.ros.qos import reliable
from fastdrivevla_ros.ros.spin import run_node
import message_filters
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import (
    FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult)
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from tf2_ros import StaticTransformBroadcaster
from visualization_msgs.msg import MarkerArray

OUTPUT_QOS, IMAGE_QOS = reliable(10), reliable(2)
OPTIONAL_TYPES = {'float_list': Parameter.Type.DOUBLE_ARRAY}
FOREIGN_PARAMETER_PREFIXES = ('qos_overrides.', 'use_sim_time', 'start_type_description_service')


def _descriptor(spec) -> ParameterDescriptor:
    fields = descriptor_fields(spec)
    descriptor = ParameterDescriptor(description=fields['description'],
                                     read_only=fields['read_only'],
                                     additional_constraints=fields['additional_constraints'])
    if fields['floating_point_range']:
        low, high = fields['floating_point_range']
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high,
                                                              step=0.0)]
    if fields['integer_range']:
        low, high = fields['integer_range']
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    return descriptor


class DriveNode(Node):
    """Plan trajectories from synchronised camera sets; see docs/ros.md for topics."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.config = self._declare_parameters()
        cfg = self.config
        self.diagnostics = DriveDiagnostics(cfg.cameras, cfg.camera_timeout_s)
        self.ego = EgoHistoryBuffer()
        self.outputs = OutputGate(alive=self.context.ok)   # Ctrl-C shuts the context first
        self._make_publishers()
        raw_converter = conversions.raw_image_converter()
        if cfg.image_transport == 'raw' and raw_converter is None:
            self.get_logger().warning(f'cv_bridge unavailable ({conversions.CV_BRIDGE_PROBLEM}):'
                                      f' raw images limited to {", ".join(RAW_ENCODINGS)}')
        self.service = PlannerService(cfg, self.diagnostics, clock=self._now_s,
                                      history=self._history,
                                      pose=self.ego.pose_at,
                                      decode=image_decoder(raw_converter),
                                      log=leveled_log(self.get_logger()))
        self.worker = LatestSetWorker(self._plan_and_publish, cfg.max_staleness_s,
                                      clock=self._now_s, on_error=self._on_worker_error,
                                      on_stale=self._on_stale)
        self._make_subscriptions()
        # Jazzy applies changes in a post-set callback; Humble has none: apply after validation
        post_set = hasattr(self, 'add_post_set_parameters_callback')
        self.updates = RuntimeUpdates(cfg, self._apply_config, post_set)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if post_set:
            self.add_post_set_parameters_callback(self._on_parameters_set)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup(),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._loader = threading.Thread(target=self.service.load, name='fastdrivevla-loader',
                                        daemon=True)
        self._loader.start()
        self.get_logger().info(
            f'planning from {len(cfg.cameras)} camera(s) on '
            f'{self.resolve_topic_name(cfg.topic(cfg.cameras[0]))} ...; '
            f'pruner {cfg.pruner} @ {cfg.pruning_ratio:.2f}; loading {cfg.model}')

    # ------------------------------------------------------------------ setup
    def _declare_parameters(self) -> NodeConfig:
        for spec in PARAMETERS:
            if spec.optional:       # statically typed, unset unless a file/launch sets it
                self.declare_parameter(spec.name, OPTIONAL_TYPES[spec.kind], _descriptor(spec))
            else:
                default = list(spec.default) if spec.kind == 'str_list' else spec.default
                self.declare_parameter(spec.name, default, _descriptor(spec))
        self._check_overrides()
        return validate_config({spec.name: self._value(spec.name) for spec in PARAMETERS})

    def _value(self, name: str):
        try:
            value = self.get_parameter(name).value
        except ParameterException:      # an unset statically typed parameter (Jazzy raises)
            return None
        return list(value) if isinstance(value, array.array) else value

    def _check_overrides(self) -> None:
        """Refuse a parameter file/launch override that looks like a typo of ours."""
        overrides = getattr(self, '_parameter_overrides', {}) or {}
        for name in overrides:
            if name in SPECS or name.startswith(FOREIGN_PARAMETER_PREFIXES):
                continue
            close = difflib.get_close_matches(name, list(SPECS), n=1)
            if close:
                raise ConfigError(f'unknown parameter {name!r}; did you mean {close[0]!r}?')
            self.get_logger().warning(f'parameter {name!r} is not used by this node')

    def _make_publishers(self) -> None:
        self.trajectory_pub = self.create_publisher(PlannedTrajectory, 'planner/trajectory',
                                                    OUTPUT_QOS)
        self.path_pub = self.create_publisher(Path, 'planner/path', OUTPUT_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, 'planner/markers', OUTPUT_QOS)
        self.heatmap_pubs = {cam: self.create_publisher(Image, f'planner/heatmap/{cam}',
                                                        IMAGE_QOS)
                             for cam in self.config.cameras}
        self.mosaic_pub = self.create_publisher(Image, 'planner/heatmap/mosaic', IMAGE_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics',
                                                     OUTPUT_QOS)
        if self.config.plan_frame:      # makes ego_frame exist in TF (RViz's fixed frame)
            self.static_tf = StaticTransformBroadcaster(self)
            self.static_tf.sendTransform(conversions.transform_msg(
                messages.static_transform_fields(self.config.ego_frame, self.config.plan_frame,
                                                 self.get_clock().now().nanoseconds)))

    def _make_subscriptions(self) -> None:
        cfg = self.config
        msg_type = CompressedImage if cfg.image_transport == 'compressed' else Image
        cameras_group = MutuallyExclusiveCallbackGroup()
        self.camera_subs = []
        for cam in cfg.cameras:
            sub = message_filters.Subscriber(self, msg_type, cfg.topic(cam),
                                             qos_profile=qos_profile_sensor_data,
                                             callback_group=cameras_group)
            self.camera_subs.append(sub)
        self.sync = message_filters.ApproximateTimeSynchronizer(
            self.camera_subs, queue_size=cfg.sync_queue_size, slop=cfg.sync_slop_s)
        self.sync.registerCallback(self._on_camera_set)
        for cam, sub in zip(cfg.cameras, self.camera_subs):   # after the synchroniser
            sub.registerCallback(self._on_camera_message, cam)
        ego_group = MutuallyExclusiveCallbackGroup()
        if cfg.odom_topic:
            self.create_subscription(Odometry, cfg.odom_topic, self._on_odometry,
                                     qos_profile_sensor_data, callback_group=ego_group)
        if cfg.ego_status_topic:
            self.create_subscription(EgoStatus, cfg.ego_status_topic, self._on_ego_status,
                                     qos_profile_sensor_data, callback_group=ego_group)

    # ------------------------------------------------------------------ callbacks
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_camera_message(self, msg, camera: str) -> None:
        self.diagnostics.camera_message(camera, self._now_s())

    def _on_camera_set(self, *msgs) -> None:
        """Hand the newest complete set to the worker; runs under the synchroniser's lock."""
        try:
            cameras = self.config.cameras
            stamps = {cam: conversions.stamp_ns(m.header.stamp) for cam, m in zip(cameras, msgs)}
            now = self._now_s()
            self.diagnostics.set_received(now)
            self.worker.submit(FrameSet(stamp=stamps[cameras[0]] * 1e-9,
                                        images=dict(zip(cameras, msgs)), stamps_ns=stamps,
                                        received=now))
        except Exception as e:  # noqa: B902 - raising here would leave the sync lock held
            self.get_logger().error(f'camera set dropped: {type(e).__name__}: {e}')

    def _on_odometry(self, msg: Odometry) -> None:
        try:
            self.ego.add_pose(odometry_sample(msg))   # time going backwards clears it
            self.diagnostics.ego_received(self._now_s())
        except ValueError as e:
            self.diagnostics.fault('input_errors', f'odometry: {e}', self._now_s())

    def _on_ego_status(self, msg) -> None:
        try:
            self.ego.add_status(status_sample(msg))
        except ValueError as e:
            self.diagnostics.fault('input_errors', f'ego status: {e}', self._now_s())

    def _history(self, stamp: float):
        """
        Return the prompt's ego history at a camera set's stamp, as the offline replay has it.

        Waits (up to ego_wait_s, wall clock) until the configured ego streams reach the
        stamp: a set can complete before the odometry of its own instant is delivered, and
        planning then would prompt another history than `fastdrivevla replay` does. Without
        odom_topic there is no history (a standing start), as before.
        """
        cfg = self.config
        if not cfg.odom_topic:
            return None
        # wait for ego status too unless odometry flows without it (no status publisher)
        status = bool(cfg.ego_status_topic) and (self.ego.has_status or not len(self.ego))
        history, covered = self.ego.history_when_covered(stamp, cfg.ego_wait_s, status)
        if not covered:
            self.diagnostics.fault('input_errors', f'no ego sample at or after the camera set '
                                   f'stamp {stamp:.3f} within ego_wait_s {cfg.ego_wait_s} s: '
                                   'planned with the history so far', self._now_s())
        return history

    @staticmethod
    def _changes(parameters) -> dict:
        return {p.name: list(p.value) if isinstance(p.value, array.array) else p.value
                for p in parameters}

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Validate `ros2 param set` (pruning_ratio & co.); rejected changes say why."""
        reason = self.updates.on_set(self._changes(parameters))
        return SetParametersResult(successful=reason is None, reason=reason or '')

    def _on_parameters_set(self, parameters) -> None:
        self.updates.post_set(self._changes(parameters))

    def _apply_config(self, new: NodeConfig) -> None:
        self.config = new
        self.service.update_config(new)
        self.worker.max_staleness_s = new.max_staleness_s
        self.diagnostics.camera_timeout_s = new.camera_timeout_s

    def _on_stale(self, frame: FrameSet, age_s: float) -> None:
        self.get_logger().warning(f'camera set {age_s:.2f} s old dropped (max_staleness_s '
                                  f'{self.worker.max_staleness_s})', throttle_duration_sec=5.0)

    def _on_worker_error(self, frame: FrameSet, error: BaseException) -> None:
        if not self.context.ok():       # a publish raced Ctrl-C's shutdown: not a fault
            return
        self.diagnostics.fault('errors', f'{type(error).__name__}: {error}', self._now_s())
        self.get_logger().error(f'planning/publishing failed: {type(error).__name__}: {error}')

    def _publish_diagnostics(self) -> None:
        now = self._now_s()
        reports = self.diagnostics.report(now, self.worker.stats())
        missing = self.diagnostics.missing_cameras(now)
        if missing:
            self.get_logger().warning(f'cameras missing or late: {sorted(missing)}',
                                      throttle_duration_sec=10.0)
        stamp = self.get_clock().now().nanoseconds
        msg = conversions.diagnostic_array_msg(messages.diagnostic_array_fields(reports, stamp))
        self.outputs.run(lambda: self.diagnostics_pub.publish(msg))

    # ------------------------------------------------------------------ worker thread
    def _plan_and_publish(self, frame: FrameSet) -> None:
        out = self.service.plan(frame)
        if out is not None:
            self.outputs.run(lambda: self._publish(out))

    def _publish(self, out: PlanOutput) -> None:
        frame_id, stamp, result = self.config.ego_frame, out.stamp_ns, out.result
        self.trajectory_pub.publish(conversions.trajectory_msg(messages.trajectory_fields(
            result, stamp, frame_id, out.camera_stamps_ns, out.latency_ms)))
        self.path_pub.publish(conversions.path_msg(messages.path_fields(result, stamp,
                                                                        frame_id)))
        self.marker_pub.publish(conversions.marker_array_msg(messages.marker_array_fields(
            result, stamp, frame_id, out.latency_ms)))
        for cam, rgb in out.heatmaps.items():
            self.heatmap_pubs[cam].publish(conversions.image_msg(
                messages.image_fields(rgb, out.camera_stamps_ns.get(cam, stamp), cam)))
        if out.mosaic is not None:
            self.mosaic_pub.publish(conversions.image_msg(
                messages.image_fields(out.mosaic, stamp, frame_id)))

    def close(self) -> None:
        """Stop the worker; a plan still running after its wait is never published."""
        self.worker.close()
        self.outputs.close()


def main(args=None) -> int:
    """Run the drive node; exit 2 with a clear message on a bad configuration."""
    rclpy.init(args=args)
    return run_node(NODE_NAME, DriveNode, (ConfigError, ParameterException),
                    lambda: MultiThreadedExecutor(num_threads=3),
                    lambda executor, node: executor.spin(), DriveNode.close)


if __name__ == '__main__':
    sys.exit(main())
