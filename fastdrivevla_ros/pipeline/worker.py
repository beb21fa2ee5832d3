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
A drop-oldest slot of size one and the thread that plans from it.

The synchroniser callback must return at once (message_filters calls it while holding its lock,
so a slow callback stalls all six camera inputs): it only `submit`s the newest complete set. The
worker takes whatever is newest when it becomes free, drops it if it is already older than
`max_staleness_s`, and otherwise runs the slow `process` (vision + LLM). Nothing queues up: a
set waiting in the slot is replaced by a newer one and counted as superseded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import threading
import time
from typing import Any, Callable, Generic, TypeVar

T = TypeVar('T')


@dataclass
class FrameSet:
    """
    One synchronised camera set, not decoded yet (decoding runs on the worker thread).

    stamp: reference stamp in seconds (the first model camera's header stamp);
    images: camera -> raw payload (a ROS image message, or anything the decoder accepts);
    stamps_ns: camera -> exact header stamp in integer nanoseconds (copied to the outputs);
    received: clock time (s) when the set completed.
    """

    stamp: float
    images: dict[str, Any]
    stamps_ns: dict[str, int] = field(default_factory=dict)
    received: float = 0.0


@dataclass
class WorkerStats:
    """
    Counters since start.

    superseded: replaced in the slot by a newer set; stale: older than max staleness when the
    worker took it; failed: `process` raised (counted by exception type in `errors`).
    """

    submitted: int = 0
    processed: int = 0
    superseded: int = 0
    stale: int = 0
    failed: int = 0
    discarded_on_close: int = 0
    busy: bool = False
    last_process_ms: float | None = None
    last_age_ms: float | None = None
    errors: dict[str, int] = field(default_factory=dict)


class LatestSetWorker(Generic[T]):
    """
    Run `process(item)` on a background thread for the newest submitted item only.

    process: the slow work; exceptions are caught, counted and passed to `on_error`;
    max_staleness_s: items whose age (clock() - stamp(item)) exceeds this when taken are
    dropped (the attribute may be changed at runtime);
    clock: seconds, the same time base as the items' stamps (a ROS clock under sim time);
    stamp: how to read an item's stamp in seconds (default: `item.stamp`).
    """

    def __init__(self, process: Callable[[T], Any], max_staleness_s: float,
                 clock: Callable[[], float] = time.monotonic, *,
                 stamp: Callable[[T], float] = lambda item: item.stamp,
                 on_error: Callable[[T, BaseException], None] | None = None,
                 on_stale: Callable[[T, float], None] | None = None,
                 name: str = 'fastdrivevla-planner'):
        self.process, self.clock, self.stamp = process, clock, stamp
        self.max_staleness_s = float(max_staleness_s)
        self.on_error, self.on_stale = on_error, on_stale
        self._cond = threading.Condition()
        self._slot: list[T] = []          # at most one item
        self._closed = False
        self._stats = WorkerStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Offer the newest item; never blocks on processing. False once closed."""
        with self._cond:
            if self._closed:
                return False
            self._stats.submitted += 1
            if self._slot:
                self._stats.superseded += 1
            self._slot[:] = [item]
            self._cond.notify()
        return True

    def stats(self) -> WorkerStats:
        """Return a consistent snapshot of the counters."""
        with self._cond:
            return replace(self._stats, errors=dict(self._stats.errors))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is waiting or running; True if that happened in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot or self._stats.busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop taking items, drop a waiting one, and join the thread (after the current run)."""
        with self._cond:
            self._closed = True
            self._stats.discarded_on_close += len(self._slot)
            self._slot.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ worker thread
    def _take(self) -> T | None:
        with self._cond:
            while not self._slot and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            item = self._slot.pop()
            self._stats.busy = True
            return item

    def _run(self) -> None:
        while True:
            item = self._take()
            if item is None:
                return
            age = self.clock() - self.stamp(item)
            if age > self.max_staleness_s:
                self._finish(stale=True, age=age)
                if self.on_stale is not None:
                    self._guard(self.on_stale, item, age)
                continue
            t0 = time.perf_counter()
            error = None
            try:
                self.process(item)
            except Exception as e:  # noqa: B902 - the worker must survive any fault
                error = e
            self._finish(age=age, error=error, ms=(time.perf_counter() - t0) * 1e3)
            if error is not None and self.on_error is not None:
                self._guard(self.on_error, item, error)

    def _finish(self, *, age: float, stale: bool = False, error: BaseException | None = None,
                ms: float | None = None) -> None:
        with self._cond:
            s = self._stats
            s.busy = False
            s.last_age_ms = age * 1e3
            if stale:
                s.stale += 1
            elif error is not None:
                s.failed += 1
                s.errors[type(error).__name__] = s.errors.get(type(error).__name__, 0) + 1
            else:
                s.processed += 1
            if ms is not None:
                s.last_process_ms = ms
            self._cond.notify_all()

    @staticmethod
    def _guard(callback: Callable, *args) -> None:
        try:
            callback(*args)
        except Exception:  # noqa: B902 - a logging callback must not kill the worker
            pass


class OutputGate:
    """
    Let outputs through only while open; `close()` waits for one in progress, then refuses.

    LatestSetWorker.close() waits a bounded time for the plan in progress (a CPU plan can take
    longer); when that plan finishes after the node was destroyed, its publish must not run.
    alive: False once outputs can no longer be sent (the ROS context was shut down by Ctrl-C
    before `close()` ran): the gate then refuses too.
    """

    def __init__(self, alive: Callable[[], bool] = lambda: True):
        self._lock = threading.Lock()
        self._open = True
        self._alive = alive

    def run(self, output: Callable[[], Any]) -> bool:
        """Call `output()` unless closed or no longer alive; return whether it ran."""
        with self._lock:
            if not self._open or not self._alive():
                return False
            output()
            return True

    def close(self) -> None:
        """Refuse every later output (after the one running, if any)."""
        with self._lock:
            self._open = False
