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
Replay evaluator node: scores the drive node's plans against the bag's ground truth.

Run by launch/replay.launch.py next to `ros2 bag play --clock` and the drive node. It hears
every fastdrivevla_ros/PlanningGroundTruth from the bag and every PlannedTrajectory from the
planner and pairs them by stamp (pipeline.evaluation.StreamEvaluator), appending each settled
keyframe to predictions.jsonl at once (plans made with settings changed at runtime go to
their own run folder under output_dir, see pipeline/evaluation.py). After `idle_timeout_s` of
WALL time without a message
(the bag ended; with `wait_for_finished`, counted only once the lockstep node announced the end
on `replay/finished`, so a slow plan never looks like the end) it writes metrics.json and
report.md and exits by itself, which ends the launch;
on SIGINT it writes them too, but what it had settled is already on disk. It holds the run
folder's lock while it lives; a folder holding another run (other settings, bag or model, or a
`fastdrivevla replay` run) or locked by another writer ends it with a fatal log line and exit
code 2, nothing written.
"""

import sys

from fastdrivevla_ros.errors import FastDriveError
from fastdrivevla_ros.msg import PlannedTrajectory, PlanningGroundTruth
from fastdrivevla_ros.pipeline.evaluation import IdleWatch, StreamEvaluator
from fastdrivevla_ros.ros.qos import FINISHED_QOS, reliable
from fastdrivevla_ros.ros.spin import run_node
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Empty

NODE_NAME = 'fastdrivevla_replay_evaluator'
# reliable and deep: the bag offers RELIABLE and no keyframe may be lost to a burst
INPUT_QOS = reliable(100)


class ReplayEvaluator(Node):
    """Collect plans and ground truth; `finish()` writes the metrics files."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        out = self.declare_parameter('output_dir', '', ParameterDescriptor(
            description='run directory for predictions.jsonl, metrics.json, report.md',
            read_only=True)).value
        if not out:
            raise FastDriveError('output_dir is required (e.g. output_dir:=out/ros_replay)')
        tolerance = self.declare_parameter('match_tolerance_s', 0.1, ParameterDescriptor(
            description='max |plan stamp - keyframe stamp| in seconds', read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.001, to_value=0.25,
                                                     step=0.0)])).value
        idle_timeout_s = self.declare_parameter('idle_timeout_s', 0.0, ParameterDescriptor(
            description='finish after this many wall-clock seconds without a message once '
                        'some arrived (0 = only at shutdown)', read_only=True)).value
        convention = self.declare_parameter('convention', 'omnidrive', ParameterDescriptor(
            description='metric convention: omnidrive | stp3 | uniad', read_only=True)).value
        bag = self.declare_parameter('bag', '', ParameterDescriptor(
            description='bag path, recorded in the run files', read_only=True)).value
        model = self.declare_parameter('model', '', ParameterDescriptor(
            description='model, recorded in the run files', read_only=True)).value
        self.armed = not self.declare_parameter('wait_for_finished', False, ParameterDescriptor(
            description='count idle time only after a message on replay/finished (lockstep '
                        'replay)', read_only=True)).value
        self.evaluator = StreamEvaluator(out, tolerance, convention, bag, model)
        self.idle = IdleWatch(idle_timeout_s)
        self.create_subscription(Empty, 'replay/finished', self._on_finished, FINISHED_QOS)
        self.done = self.refused = False
        self.create_subscription(PlanningGroundTruth, 'planning/ground_truth',
                                 self._on_ground_truth, INPUT_QOS)
        self.create_subscription(PlannedTrajectory, 'planner/trajectory', self._on_plan,
                                 INPUT_QOS)
        if idle_timeout_s > 0:   # steady clock: /clock stops when the bag ends
            self.create_timer(1.0, self._check_idle,
                              clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f'evaluating into {out} (tolerance {tolerance} s)')

    def _touch(self) -> None:
        if self.armed:
            self.idle.touch()

    def _on_finished(self, msg) -> None:
        self.get_logger().info('the lockstep replay finished')
        self.armed = True
        self.idle.touch()

    def _on_ground_truth(self, msg) -> None:
        self._touch()
        self._report(self.evaluator.ground_truth_message(msg))

    def _on_plan(self, msg) -> None:
        self._touch()
        runs = len(self.evaluator.other_runs)
        try:
            self._report(self.evaluator.plan_message(msg))
        except FastDriveError:       # the folder holds another run: stop, write nothing
            self.refused = self.done = True
            raise
        if len(self.evaluator.other_runs) > runs:
            self.get_logger().info(f'plans with {msg.pruner} @ {msg.pruning_ratio:.2f} (new '
                                   f'settings) go to {self.evaluator.other_runs[-1].out_dir}')

    def _report(self, problem) -> None:
        if problem is not None:
            self.get_logger().error(problem, throttle_duration_sec=5.0)

    def _check_idle(self) -> None:
        if self.idle.expired():
            self.get_logger().info(f'no message for {self.idle.timeout_s:g} s: finishing')
            self.finish()

    def finish(self) -> None:
        """Write the run files once; safe to call again."""
        if self.done:
            return
        self.done = True
        metrics = self.evaluator.finish()
        if metrics is None:
            self.get_logger().warn(f'no plan arrived: nothing written to '
                                   f'{self.evaluator.out_dir}')
            return
        self.get_logger().info(
            f"wrote {self.evaluator.out_dir}: {metrics['samples']} scored keyframes, "
            f"{metrics['missing_predictions']} without a plan, "
            f"{sum(metrics['malformed_messages'].values())} malformed messages skipped, L2 avg "
            f"{metrics['l2_cm'].get('avg')} cm")

    def close(self) -> None:
        """Write the run files unless refused, then release the run folder's lock."""
        if not self.refused:
            self.finish()
        self.evaluator.close()


def _spin_until_done(executor, node: 'ReplayEvaluator') -> None:
    while rclpy.ok() and not node.done:
        executor.spin_once(timeout_sec=0.5)


def main(args=None) -> int:
    """Run until shutdown (or idle timeout), then write the metrics files."""
    rclpy.init(args=args)
    return run_node(NODE_NAME, ReplayEvaluator, (FastDriveError,), SingleThreadedExecutor,
                    _spin_until_done, ReplayEvaluator.close)


if __name__ == '__main__':
    sys.exit(main())
