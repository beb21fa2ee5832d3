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
The drive node's shutdown: a plan that finishes after Ctrl-C is dropped without an error.

Ctrl-C shuts the rclpy context down (rclpy's signal handler) while the worker thread may still
be planning; run_node then waits for that plan. Publishing it on the dead context raised
RCLError ("publisher's context is invalid"), logged as `[ERROR] planning/publishing failed` on
every normal shutdown. Runs in-process on a real rclpy context (colcon test); no model: the
plan is a stand-in the test releases after the shutdown.
"""

import threading

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='ROS 2 (rclpy) is not installed; this test runs '
                            'under colcon test')
pytest.importorskip('fastdrivevla_ros.msg', reason='fastdrivevla_ros is not built with colcon '
                    '(its messages are missing)')

from rclpy.parameter import Parameter  # noqa: E402

from fastdrivevla_ros.pipeline.planner import PlanOutput  # noqa: E402,I100
from fastdrivevla_ros.pipeline.worker import FrameSet  # noqa: E402
from fastdrivevla_ros.ros.drive_node import DriveNode  # noqa: E402
from fastdrivevla_ros.vla.result import PlanResult  # noqa: E402


class HeldPlan:
    """A stand-in for PlannerService.plan that returns a real plan when the test releases it."""

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()
        result = PlanResult(np.zeros((6, 2)), 'ok', '', [], 'none', 0.0, {'total': 1.0})
        self.output = PlanOutput(result, 1, {}, 1.0)

    def __call__(self, frame):
        self.started.set()
        assert self.release.wait(30.0)
        return self.output

    def run(self, node: DriveNode, before_release=lambda: None) -> None:
        self.started.clear()
        self.release.clear()
        assert node.worker.submit(FrameSet(stamp=node._now_s(), images={}))
        assert self.started.wait(30.0)
        before_release()
        self.release.set()
        assert node.worker.wait_idle(30.0)


def test_a_plan_finishing_after_the_context_shut_down_is_dropped_without_an_error(tmp_path):
    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = [Parameter('model', value=str(tmp_path / 'no-model')),   # not needed here
                 Parameter('cameras', value=['CAM_FRONT']), Parameter('odom_topic', value=''),
                 Parameter('ego_status_topic', value=''),
                 Parameter('max_staleness_s', value=60.0)]
    node = DriveNode(context=context, parameter_overrides=overrides)
    try:
        plan = HeldPlan()
        node.service.plan = plan
        plan.run(node)                  # a live context: the plan is published
        assert node.worker.stats().processed == 1 and node.worker.stats().failed == 0
        plan.run(node, before_release=context.try_shutdown)     # as Ctrl-C does
        stats = node.worker.stats()
        assert stats.failed == 0, f'the late plan raised: {stats.errors}'
        assert node.diagnostics.counts['errors'] == 0     # _on_worker_error logs and counts
    finally:
        node.close()
        node.destroy_node()
        context.try_shutdown()
