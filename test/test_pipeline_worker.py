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

"""The latest-set worker: newest set only, stale sets dropped, faults survived, no queue."""

import threading
import time

from fastdrivevla_ros.pipeline.worker import FrameSet, LatestSetWorker
import pytest


class ManualClock:

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def frame(stamp: float, tag: str) -> FrameSet:
    return FrameSet(stamp=stamp, images={'CAM_FRONT': tag})


@pytest.fixture
def gate():
    """Make a process function that blocks until released, recording what it ran."""
    class Gate:

        def __init__(self):
            self.release = threading.Event()
            self.started = threading.Event()
            self.done = []

        def __call__(self, item):
            self.started.set()
            self.release.wait(5)
            self.done.append(item.images['CAM_FRONT'])

    return Gate()


def test_only_the_newest_set_runs_after_a_busy_period(gate):
    clock = ManualClock()
    worker = LatestSetWorker(gate, max_staleness_s=10.0, clock=clock)
    worker.submit(frame(100.0, 'a'))
    assert gate.started.wait(2)
    for tag in 'bcd':            # arrive while 'a' is being planned
        worker.submit(frame(100.0, tag))
    gate.release.set()
    assert worker.wait_idle(5)
    worker.close()
    stats = worker.stats()
    assert gate.done == ['a', 'd']
    assert (stats.submitted, stats.processed, stats.superseded) == (4, 2, 2)


def test_set_older_than_max_staleness_is_dropped_and_counted():
    clock, ran, stale = ManualClock(100.0), [], []
    worker = LatestSetWorker(lambda item: ran.append(item), max_staleness_s=0.5, clock=clock,
                             on_stale=lambda item, age: stale.append(round(age, 3)))
    worker.submit(frame(99.2, 'old'))      # 0.8 s old when taken
    assert worker.wait_idle(2)
    worker.submit(frame(99.9, 'fresh'))
    assert worker.wait_idle(2)
    worker.close()
    assert [f.images['CAM_FRONT'] for f in ran] == ['fresh']
    assert stale == [0.8] and worker.stats().stale == 1


def test_staleness_threshold_can_change_at_runtime():
    clock, ran = ManualClock(100.0), []
    worker = LatestSetWorker(lambda item: ran.append(item), max_staleness_s=0.5, clock=clock)
    worker.max_staleness_s = 2.0
    worker.submit(frame(99.2, 'kept'))
    assert worker.wait_idle(2)
    worker.close()
    assert len(ran) == 1 and worker.stats().stale == 0


def test_a_failing_frame_is_counted_and_the_worker_keeps_running():
    errors = []

    def process(item):
        if item.images['CAM_FRONT'] == 'bad':
            raise RuntimeError('CUDA error: an illegal memory access')

    worker = LatestSetWorker(process, max_staleness_s=10.0, clock=ManualClock(),
                             on_error=lambda item, e: errors.append(str(e)))
    worker.submit(frame(100.0, 'bad'))
    assert worker.wait_idle(2)
    worker.submit(frame(100.0, 'good'))
    assert worker.wait_idle(2)
    worker.close()
    stats = worker.stats()
    assert (stats.failed, stats.processed) == (1, 1)
    assert stats.errors == {'RuntimeError': 1} and 'illegal memory' in errors[0]


def test_submit_returns_immediately_while_planning(gate):
    worker = LatestSetWorker(gate, max_staleness_s=10.0, clock=ManualClock())
    worker.submit(frame(100.0, 'a'))
    assert gate.started.wait(2)
    t0 = time.perf_counter()
    for i in range(100):
        worker.submit(frame(100.0, str(i)))
    elapsed = time.perf_counter() - t0
    gate.release.set()
    worker.close()
    assert elapsed < 0.05, f'submit blocked for {elapsed:.3f} s'


def test_close_stops_the_thread_and_refuses_new_sets(gate):
    worker = LatestSetWorker(gate, max_staleness_s=10.0, clock=ManualClock())
    worker.submit(frame(100.0, 'a'))
    assert gate.started.wait(2)
    worker.submit(frame(100.0, 'waiting'))
    gate.release.set()
    worker.close(timeout=5)
    assert not worker._thread.is_alive()
    assert worker.submit(frame(100.0, 'late')) is False
    stats = worker.stats()
    assert stats.processed + stats.discarded_on_close == 2


def test_12hz_stream_with_slow_planner_never_queues_and_plans_fresh_sets():
    """12 Hz camera sets, 0.2 s per plan: every plan uses a set at most one period old."""
    ages = []

    def process(item):
        ages.append(time.monotonic() - item.stamp)
        time.sleep(0.2)

    worker = LatestSetWorker(process, max_staleness_s=0.5)   # default clock: time.monotonic
    t_end = time.monotonic() + 1.2
    while time.monotonic() < t_end:
        worker.submit(FrameSet(stamp=time.monotonic(), images={}))
        time.sleep(1 / 12)
    worker.close()
    stats = worker.stats()
    assert 3 <= stats.processed <= 7
    assert stats.submitted == stats.processed + stats.superseded + stats.stale + \
        stats.discarded_on_close + stats.failed + int(stats.busy)
    assert max(ages) < 1 / 12 + 0.1


def test_a_plan_outlasting_close_is_not_published():
    """close() waits a bounded time; a plan finishing later must not reach a destroyed node."""
    from fastdrivevla_ros.pipeline.worker import OutputGate

    gate, published, started = OutputGate(), [], threading.Event()

    def slow_plan(frame):
        started.set()
        time.sleep(0.3)                                  # a CPU plan longer than the wait
        gate.run(lambda: published.append(frame.stamp))

    worker = LatestSetWorker(slow_plan, max_staleness_s=60.0, clock=lambda: 0.0)
    worker.submit(FrameSet(stamp=0.0, images={}))
    assert started.wait(5.0)
    worker.close(timeout=0.01)                           # returns while the plan still runs
    gate.close()                                         # then the node is destroyed
    time.sleep(0.5)
    assert published == []
    assert gate.run(lambda: published.append('late')) is False and published == []


def test_the_gate_refuses_once_outputs_can_no_longer_be_sent():
    """Ctrl-C shuts the ROS context before close(): the gate must refuse from then on."""
    from fastdrivevla_ros.pipeline.worker import OutputGate

    alive, published = [True], []
    gate = OutputGate(alive=lambda: alive[0])
    assert gate.run(lambda: published.append(1)) is True
    alive[0] = False
    assert gate.run(lambda: published.append(2)) is False and published == [1]
