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
Lockstep replay node: plays a paused `ros2 bag play` one keyframe at a time.

Run by launch/replay.launch.py (mode:=lockstep) next to `ros2 bag play --start-paused`, the
drive node and the replay evaluator. It reads the bag's index, splits it into keyframe steps
(pipeline.lockstep), and for each step calls the player's own rosbag2_interfaces/srv/Burst
service with the step's message count, then waits for the drive node's PlannedTrajectory for
that keyframe (or `keyframe_timeout_s`, logged and counted). After the last step it publishes
std_msgs/Empty on `replay/finished` (the evaluator then writes its files), logs a summary and
exits.
"""

import sys

from fastdrivevla_ros.data import topics
from fastdrivevla_ros.data.bag_reader import BagFrames, MAX_CAMERA_OFFSET_S
from fastdrivevla_ros.errors import FastDriveError
from fastdrivevla_ros.msg import PlannedTrajectory
from fastdrivevla_ros.pipeline.lockstep import keyframe_steps, LockstepController
from fastdrivevla_ros.ros.qos import FINISHED_QOS, reliable
from fastdrivevla_ros.ros.spin import run_node
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rosbag2_interfaces.srv import Burst
from std_msgs.msg import Empty

NODE_NAME = 'fastdrivevla_replay_lockstep'
PLANS_QOS = reliable(10)


class LockstepReplay(Node):
    """Burst one keyframe's messages, wait for its plan, repeat; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)

        def declare(name, default, description, **descriptor):
            return self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=True, **descriptor)).value

        bag = declare('bag', '', 'bag directory the player plays (read for its index)')
        if not bag:
            raise FastDriveError('bag is required (e.g. bag:=out/scene-0916_bag)')
        player = declare('player', '/rosbag2_player', "the player node's name (its services)")
        tolerance = declare('match_tolerance_s', 0.1, 'max |plan stamp - keyframe stamp| (s)',
                            floating_point_range=[FloatingPointRange(
                                from_value=0.001, to_value=0.25, step=0.0)])
        timeout = declare('keyframe_timeout_s', 120.0, 'wall-clock seconds to wait for a '
                          "keyframe's plan before playing the next (counted and reported)",
                          floating_point_range=[FloatingPointRange(
                              from_value=0.1, to_value=86400.0, step=0.0)])
        steps, tail = keyframe_steps(BagFrames(bag).log_times(), topics.GROUND_TRUTH,
                                     int(MAX_CAMERA_OFFSET_S * 1e9))
        self.control = LockstepController(steps, tail, int(tolerance * 1e9), timeout)
        self.burst = self.create_client(Burst, f'{player.rstrip("/")}/burst')
        self.finished_pub = self.create_publisher(Empty, 'replay/finished', FINISHED_QOS)
        self.create_subscription(PlannedTrajectory, 'planner/trajectory', self._on_plan,
                                 PLANS_QOS)
        self.done = False
        self.get_logger().info(f'{len(steps)} keyframe(s) in {bag}; waiting for '
                               f'{self.burst.srv_name}')

    def _on_plan(self, msg) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if self.control.on_plan(stamp):
            c = self.control
            self.get_logger().info(f'keyframe {c.index + 1}/{len(c.steps)} planned after '
                                   f'{c.plan_seconds[-1]:.1f} s')

    def step(self, executor) -> None:
        """Burst the next step if ready; at the end announce it and mark the node done."""
        timeouts = len(self.control.timeouts)
        if not self.control.ready():
            return
        if len(self.control.timeouts) > timeouts:
            self.get_logger().warning(
                f'keyframe {self.control.index + 1}: no plan within '
                f'{self.control.timeout_s:g} s; playing the next (counted as missing)')
        count = self.control.next_burst()
        if count is None:
            self.finished_pub.publish(Empty())
            self.get_logger().info(self.control.summary())
            self.done = True
            return
        if count:
            future = self.burst.call_async(Burst.Request(num_messages=count))
            executor.spin_until_future_complete(future)
            played = future.result().actually_burst if future.result() else 0
            if played != count:
                self.get_logger().warning(f'the player burst {played} of {count} messages')


def _spin(executor, node: LockstepReplay) -> None:
    while rclpy.ok() and not node.burst.wait_for_service(timeout_sec=1.0):
        pass
    while rclpy.ok() and not node.done:
        node.step(executor)
        executor.spin_once(timeout_sec=0.05)
    executor.spin_once(timeout_sec=1.0)      # let the latched 'finished' go out


def main(args=None) -> int:
    """Run the lockstep replay; exit 2 with a clear message on a bad configuration."""
    rclpy.init(args=args)
    return run_node(NODE_NAME, LockstepReplay, (FastDriveError,), SingleThreadedExecutor,
                    _spin, lambda node: None)


if __name__ == '__main__':
    sys.exit(main())
