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
What the drive node reports on /diagnostics: model state, cameras, planning, faults.

Thread-safe counters fed by the ROS callbacks and the planner thread; `report(now)` turns them
into diagnostic_msgs/DiagnosticStatus-shaped records (see messages.diagnostic_array_fields).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import threading
from typing import Iterable

from fastdrivevla_ros.pipeline.worker import WorkerStats

OK, WARN, ERROR, STALE = 0, 1, 2, 3     # diagnostic_msgs/DiagnosticStatus levels
HARDWARE_ID = 'fastdrivevla'


@dataclass
class StatusReport:
    """One DiagnosticStatus: level (OK/WARN/ERROR/STALE), name, message, key/values."""

    level: int
    name: str
    message: str
    values: dict[str, str] = field(default_factory=dict)
    hardware_id: str = HARDWARE_ID


def _rate(times: Iterable[float]) -> float:
    t = list(times)
    if len(t) < 2 or t[-1] <= t[0]:
        return 0.0
    return (len(t) - 1) / (t[-1] - t[0])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class DriveDiagnostics:
    """
    Counters and rolling windows (last `window` events) behind the node's diagnostics.

    cameras: the synchronised cameras; camera_timeout_s: silence after which a camera is
    reported missing; fault_hold_s: how long the last fault keeps the planner status at WARN.
    """

    def __init__(self, cameras: Iterable[str], camera_timeout_s: float = 1.0,
                 window: int = 50, fault_hold_s: float = 10.0):
        self.cameras = tuple(cameras)
        self.camera_timeout_s = camera_timeout_s
        self.fault_hold_s = fault_hold_s
        self._lock = threading.Lock()
        self._camera_last: dict[str, float] = {}
        self._camera_times = {c: deque(maxlen=window) for c in self.cameras}
        self._set_times: deque[float] = deque(maxlen=window)
        self._plan_times: deque[float] = deque(maxlen=window)
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._engine_ms: deque[float] = deque(maxlen=window)
        self._ego_last: float | None = None
        self.model = ('loading', '')
        self.warmup_s: float | None = None
        self.counts = {'sets': 0, 'plans': 0, 'parse_failed': 0, 'input_errors': 0,
                       'cuda_oom': 0, 'errors': 0, 'model_unavailable': 0}
        self.input_errors_by_camera: dict[str, int] = {}
        self.last_fault: tuple[float, str, str] | None = None   # (time, kind, message)
        self.last_plan: dict[str, str] = {}

    # ------------------------------------------------------------------ inputs
    def camera_message(self, camera: str, now: float) -> None:
        """Note one image on `camera`'s topic (before synchronisation)."""
        with self._lock:
            self._camera_last[camera] = now
            if camera in self._camera_times:
                self._camera_times[camera].append(now)

    def set_received(self, now: float) -> None:
        """Count a complete camera set emitted by the synchroniser."""
        with self._lock:
            self.counts['sets'] += 1
            self._set_times.append(now)

    def ego_received(self, now: float) -> None:
        """Note the arrival of an odometry message."""
        with self._lock:
            self._ego_last = now

    def model_state(self, state: str, detail: str = '', warmup_s: float | None = None) -> None:
        """
        Record the model's state: 'loading', 'warming up', 'ready' or 'failed'.

        detail says why or what; warmup_s: seconds the warm-up plans took (shown once known).
        """
        with self._lock:
            self.model = (state, detail)
            if warmup_s is not None:
                self.warmup_s = warmup_s

    # ------------------------------------------------------------------ planning
    def plan_done(self, now: float, status: str, latency_ms: float, engine_ms: float,
                  summary: dict[str, str] | None = None) -> None:
        """Count a published plan: status 'ok'/'parse_failed', stamp-to-publish latency."""
        with self._lock:
            self.counts['plans'] += 1
            self.counts['parse_failed'] += status != 'ok'
            self._plan_times.append(now)
            self._latency_ms.append(latency_ms)
            self._engine_ms.append(engine_ms)
            self.last_plan = dict(summary or {})

    def fault(self, kind: str, message: str, now: float, camera: str | None = None) -> None:
        """Count a fault: kind in input_errors / cuda_oom / errors / model_unavailable."""
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if camera is not None:
                self.input_errors_by_camera[camera] = \
                    self.input_errors_by_camera.get(camera, 0) + 1
            self.last_fault = (now, kind, message)

    # ------------------------------------------------------------------ report
    def missing_cameras(self, now: float) -> dict[str, float | None]:
        """Cameras silent for longer than the timeout -> seconds since last (None: never)."""
        with self._lock:
            out = {}
            for cam in self.cameras:
                last = self._camera_last.get(cam)
                if last is None or now - last > self.camera_timeout_s:
                    out[cam] = None if last is None else now - last
            return out

    def report(self, now: float, worker: WorkerStats | None = None) -> list[StatusReport]:
        """Statuses 'fastdrivevla: model', ': cameras', ': planner' at time `now`."""
        missing = self.missing_cameras(now)
        with self._lock:
            return [self._model_status(), self._camera_status(now, missing),
                    self._planner_status(now, worker)]

    def _model_status(self) -> StatusReport:
        state, detail = self.model
        level = {'ready': OK, 'loading': WARN, 'warming up': WARN}.get(state, ERROR)
        message = state if not detail else f'{state}: {detail}'
        values = {'state': state}
        if self.warmup_s is not None:
            values['warmup_s'] = f'{self.warmup_s:.3f}'
        return StatusReport(level, 'fastdrivevla: model', message, values)

    def _camera_status(self, now: float, missing: dict[str, float | None]) -> StatusReport:
        values = {f'{c} rate_hz': f'{_rate(self._camera_times[c]):.2f}' for c in self.cameras}
        values['sets_received'] = str(self.counts['sets'])
        values['set_rate_hz'] = f'{_rate(self._set_times):.2f}'
        values['input_errors'] = str(self.counts['input_errors'])
        values.update({f'{c} input_errors': str(n)
                       for c, n in sorted(self.input_errors_by_camera.items())})
        values['ego_odometry_age_s'] = ('never' if self._ego_last is None
                                        else f'{now - self._ego_last:.2f}')
        if missing:
            parts = [f'{c} ({"never received" if s is None else f"silent {s:.1f} s"})'
                     for c, s in missing.items()]
            level = ERROR if len(missing) == len(self.cameras) else WARN
            return StatusReport(level, 'fastdrivevla: cameras',
                                'missing or late: ' + ', '.join(parts), values)
        return StatusReport(OK, 'fastdrivevla: cameras', 'all cameras publishing', values)

    def _planner_status(self, now: float, worker: WorkerStats | None) -> StatusReport:
        lat = list(self._latency_ms)
        values = {k: str(v) for k, v in self.counts.items()}
        values.update({
            'plan_rate_hz': f'{_rate(self._plan_times):.2f}',
            'latency_ms_mean': f'{sum(lat) / len(lat):.1f}' if lat else 'n/a',
            'latency_ms_p95': f'{_percentile(lat, 0.95):.1f}' if lat else 'n/a',
            'latency_ms_max': f'{max(lat):.1f}' if lat else 'n/a',
            'engine_ms_mean': (f'{sum(self._engine_ms) / len(self._engine_ms):.1f}'
                               if self._engine_ms else 'n/a'),
        })
        if worker is not None:
            values.update({'dropped_stale': str(worker.stale),
                           'dropped_superseded': str(worker.superseded),
                           'worker_failures': str(worker.failed),
                           'worker_busy': str(worker.busy)})
        values.update({f'last_{k}': v for k, v in self.last_plan.items()})
        if self.last_fault is not None and now - self.last_fault[0] <= self.fault_hold_s:
            _, kind, message = self.last_fault
            return StatusReport(WARN, 'fastdrivevla: planner', f'{kind}: {message}', values)
        if self.counts['plans'] == 0:
            return StatusReport(WARN, 'fastdrivevla: planner', 'no plan yet', values)
        return StatusReport(OK, 'fastdrivevla: planner',
                            f'planning at {values["plan_rate_hz"]} Hz', values)
