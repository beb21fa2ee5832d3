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
Lockstep bag replay, ROS-free: which messages make up each keyframe, and when to play the next.

`ros2 bag play --start-paused` plays nothing until told; the lockstep node (ros/) bursts one
keyframe's messages at a time through the player's own `burst` service and bursts the next
only when the drive node's plan for the current keyframe arrived or `timeout_s` passed (counted
and reported). So every keyframe is planned however slow the planner is, from the same messages
`fastdrivevla replay` reads.

Keyframe k's step is every message after step k-1 up to log time t_k + window, where t_k is its
ground-truth stamp and window is bag_reader.MAX_CAMERA_OFFSET_S: the reader takes a keyframe's
images from within that window, so the step holds its images, odometry, status and ground truth.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
import time
from typing import Callable, Iterable


@dataclass(frozen=True)
class Step:
    """One keyframe: its ground-truth stamp and how many bag messages to burst for it."""

    stamp_ns: int
    messages: int


def keyframe_steps(log_times: Iterable[tuple[str, int]], keyframe_topic: str,
                   window_ns: int) -> tuple[list[Step], int]:
    """
    Split a bag's (topic, log time ns) sequence, in play order, into keyframe steps.

    Returns the steps and the number of messages after the last one (played at the end).
    """
    items = list(log_times)
    times = [t for _, t in items]
    steps, start = [], 0
    for t_k in (t for topic, t in items if topic == keyframe_topic):
        end = max(bisect.bisect_right(times, t_k + window_ns), start)
        steps.append(Step(t_k, end - start))
        start = end
    return steps, len(items) - start


@dataclass
class LockstepController:
    """
    Which burst comes next: a step's burst once the previous keyframe was planned or timed out.

    tolerance_ns: max |plan stamp - keyframe stamp| for a plan to count as the keyframe's (the
    plan carries its reference camera's stamp); timeout_s: wall-clock seconds to wait for it.
    """

    steps: list[Step]
    tail: int
    tolerance_ns: int
    timeout_s: float
    clock: Callable[[], float] = time.monotonic
    index: int = -1                       # the step being waited on (-1: none yet)
    planned: bool = True
    deadline: float = 0.0
    timeouts: list[int] = field(default_factory=list)   # stamps of keyframes never planned
    plan_seconds: list[float] = field(default_factory=list)

    def on_plan(self, stamp_ns: int) -> bool:
        """Register a published plan; return True when it is the current keyframe's."""
        if self.planned or self.index < 0:
            return False
        if abs(stamp_ns - self.steps[self.index].stamp_ns) > self.tolerance_ns:
            return False
        self.planned = True
        self.plan_seconds.append(self.timeout_s - (self.deadline - self.clock()))
        return True

    def ready(self) -> bool:
        """Return True when the next burst may go: planned, or timed out (recorded once)."""
        if self.planned:
            return True
        if self.clock() < self.deadline:
            return False
        self.timeouts.append(self.steps[self.index].stamp_ns)
        self.planned = True
        return True

    def next_burst(self) -> int | None:
        """
        Advance to the next step and return how many messages to burst (0: none).

        After the last step returns the tail's count once (its step index is len(steps)),
        then None: the replay is over. Call only when ready().
        """
        if self.index >= len(self.steps):
            return None
        self.index += 1
        if self.index == len(self.steps):
            return self.tail
        self.planned = False
        self.deadline = self.clock() + self.timeout_s
        return self.steps[self.index].messages

    def summary(self) -> str:
        """One line: keyframes played, planned, timed out."""
        n = min(self.index + 1, len(self.steps))
        line = f'{n} keyframe(s) played in lockstep, {n - len(self.timeouts)} planned'
        if self.timeouts:
            line += (f', {len(self.timeouts)} timed out (no plan within {self.timeout_s:g} s; '
                     f'stamps {self.timeouts[:5]}{" ..." if len(self.timeouts) > 5 else ""})')
        return line
