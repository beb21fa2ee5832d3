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
Live-replay evaluation: match published plans to the bag's ground truth, ROS-free.

The replay evaluator node feeds every PlanningGroundTruth it hears (from `ros2 bag play`) and
every PlannedTrajectory the drive node publishes into a StreamEvaluator, which pairs them by
stamp and writes the SAME files as the offline `fastdrivevla replay` (predictions.jsonl,
shard.json, metrics.json, report.md, plots) through fastdrivevla_ros.eval, so both paths are
scored by one implementation.

Durability: each keyframe's record is appended to predictions.jsonl (flushed) as soon as it
settles, and a restarted evaluator resumes from that file like `fastdrivevla replay`; shard.json,
metrics.json and report.md are written at the end (`finish`). A malformed message (no header,
wrong number of waypoints, a NaN) is counted and reported, never fatal.

Matching: a plan is stamped with its reference camera image (within ~50 ms of the keyframe's
LiDAR stamp in nuScenes); each keyframe takes the plan nearest in time within `tolerance_s`.
Plans arrive in stamp order, so a keyframe is settled as soon as a plan newer than
stamp + tolerance arrives (or at `finish`); keyframes the node never planned (dropped as stale
or superseded while it was busy) are reported as missing, never invented.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
import math
from pathlib import Path
import time
from typing import Any, Callable

from fastdrivevla_ros.eval.metrics import DEFAULT_CONVENTION, sample_metrics
from fastdrivevla_ros.eval.replay import (
    finish_run, MANIFEST, METRICS, PREDICTIONS, PredictionStore, write_json)


@dataclass
class Keyframe:
    """One ground-truth keyframe: stamp (ns), PlanningTarget and its scene bookkeeping."""

    stamp_ns: int
    target: Any                      # fastdrivevla_ros.data.bag_reader.PlanningTarget
    scene_token: str = ''
    scene_name: str = ''
    index_in_scene: int = 0


def result_from_trajectory(fields: dict) -> dict:
    """
    Return a PlanResult.to_json()-shaped dict of PlannedTrajectory fields.

    `fields` has the shape messages.trajectory_fields builds (waypoints as {'x', 'y', 'z'}).
    """
    timings = {k: float(fields[f'{k}_ms'])
               for k in ('preprocess', 'vision', 'scoring', 'prefill', 'decode')}
    timings['total'] = float(fields['engine_ms'])
    return {
        'waypoints': [[float(p['x']), float(p['y'])] for p in fields['waypoints']],
        'status': fields['status'], 'reason': fields['reason'], 'text': fields['text'],
        'pruner': fields['pruner'], 'pruning_ratio': round(float(fields['pruning_ratio']), 6),
        'tokens_kept': int(fields['tokens_kept']), 'tokens_total': int(fields['tokens_total']),
        'num_generated': int(fields['num_generated']), 'timings_ms': timings,
        'latency_ms': float(fields['latency_ms']),
        'views': [{'camera': c, 'tokens_kept': int(k), 'tokens_total': int(n)}
                  for c, k, n in zip(fields['cameras'], fields['camera_tokens_kept'],
                                     fields['camera_tokens_total'])],
    }


def stamp_ns_of(msg) -> int:
    """Return a message header's stamp as integer nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def trajectory_fields_of(msg) -> dict:
    """Return a PlannedTrajectory's values shaped like pipeline.messages.trajectory_fields."""
    scalars = ('waypoint_dt', 'status', 'reason', 'text', 'pruner', 'pruning_ratio',
               'tokens_kept', 'tokens_total', 'num_generated', 'preprocess_ms', 'vision_ms',
               'scoring_ms', 'prefill_ms', 'decode_ms', 'engine_ms', 'latency_ms')
    fields = {name: getattr(msg, name) for name in scalars}
    fields.update(
        header={'stamp': {'sec': msg.header.stamp.sec, 'nanosec': msg.header.stamp.nanosec},
                'frame_id': msg.header.frame_id},
        waypoints=[{'x': p.x, 'y': p.y, 'z': p.z} for p in msg.waypoints],
        cameras=list(msg.cameras), camera_tokens_kept=list(msg.camera_tokens_kept),
        camera_tokens_total=list(msg.camera_tokens_total),
        camera_stamps=[{'sec': t.sec, 'nanosec': t.nanosec} for t in msg.camera_stamps])
    return fields


def _check_plan(result: dict) -> dict:
    points = result['waypoints']
    if result['status'] == 'ok' and len(points) != 6:
        raise ValueError(f'an ok plan has {len(points)} waypoints, not 6')
    if not all(math.isfinite(v) for p in points for v in p):
        raise ValueError('a waypoint is not a finite number')
    return result


class IdleWatch:
    """
    Wall-clock idleness: True once `timeout_s` passed without `touch()` after a first one.

    Monotonic time on purpose: under use_sim_time the ROS clock stops when the bag ends (and
    has not started while the model loads), so a sim-time idle check would never fire.
    """

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic):
        self.timeout_s, self.clock = float(timeout_s), clock
        self.last: float | None = None

    def touch(self) -> None:
        """Record activity now."""
        self.last = self.clock()

    def expired(self) -> bool:
        """Return True when armed, enabled (timeout > 0) and idle for longer than the timeout."""
        return self.timeout_s > 0 and self.last is not None and \
            self.clock() - self.last > self.timeout_s


class StreamEvaluator:
    """
    Pair plans with keyframes as they stream in; write the replay run files at the end.

    out_dir: run directory (created; must not hold another run's predictions);
    tolerance_s: max |plan stamp - keyframe stamp|; convention: metric convention name;
    bag / model: recorded in shard.json and metrics.json.
    """

    def __init__(self, out_dir, tolerance_s: float = 0.1, convention: str = DEFAULT_CONVENTION,
                 bag: str = '', model: str = ''):
        from fastdrivevla_ros.eval.metrics import convention as check_convention

        check_convention(convention)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.convention, self.bag, self.model = convention, bag, model
        self.store = PredictionStore(self.out_dir / PREDICTIONS)
        self.pending: list[Keyframe] = []                 # keyframes not settled yet
        self.candidates: list[tuple[int, dict]] = []      # (stamp, result) plans not used yet
        self.expected: list[str] = [r['token'] for r in self.store.ordered()]   # resumed
        self.missing: list[str] = []
        self.ordinal = len(self.store.records)
        self.plans_seen = 0
        self.malformed: Counter = Counter()           # 'ground_truth' / 'plan' -> count
        self.last_malformed = ''

    def ground_truth_message(self, msg) -> str | None:
        """Add a PlanningGroundTruth message; return why it was skipped, or None."""
        from fastdrivevla_ros.data.bag_reader import target_from_msg

        try:
            keyframe = Keyframe(stamp_ns_of(msg), target_from_msg(msg), msg.scene_token,
                                msg.scene_name, int(msg.index_in_scene))
        except Exception as e:  # noqa: B902 - one malformed message must not end the run
            return self._malformed('ground_truth', msg, e)
        self.add_keyframe(keyframe)
        return None

    def plan_message(self, msg) -> str | None:
        """Add a PlannedTrajectory message; return why it was skipped, or None."""
        try:
            stamp = stamp_ns_of(msg)
            result = _check_plan(result_from_trajectory(trajectory_fields_of(msg)))
        except Exception as e:  # noqa: B902 - one malformed message must not end the run
            return self._malformed('plan', msg, e)
        self.add_plan(stamp, result)
        return None

    def _malformed(self, kind: str, msg, error: Exception) -> str:
        self.malformed[kind] += 1
        self.last_malformed = f'{kind} message skipped: {type(error).__name__}: {error}'
        return self.last_malformed

    def add_keyframe(self, keyframe: Keyframe) -> None:
        """Register a ground-truth keyframe (from the bag)."""
        token = keyframe.target.token
        if token in self.store or token in {k.target.token for k in self.pending}:
            return                     # a looping bag: the first pass counts
        self.expected.append(token)
        self.pending.append(keyframe)
        self.pending.sort(key=lambda k: k.stamp_ns)
        self._settle(final=False)

    def add_plan(self, stamp_ns: int, result: dict) -> None:
        """Register a published plan (result_from_trajectory(...) of a PlannedTrajectory)."""
        self.plans_seen += 1
        self.candidates.append((int(stamp_ns), result))
        self._settle(final=False)

    def _settle(self, final: bool) -> None:
        newest = max((s for s, _ in self.candidates), default=None)
        still = []
        for kf in self.pending:
            if not final and (newest is None or newest <= kf.stamp_ns + self.tolerance_ns):
                still.append(kf)       # a closer plan may still come
                continue
            near = [(abs(s - kf.stamp_ns), s, r) for s, r in self.candidates
                    if abs(s - kf.stamp_ns) <= self.tolerance_ns]
            if near:
                _, stamp, result = min(near, key=lambda item: item[0])
                self._record(kf, result)
            else:
                self.missing.append(kf.target.token)
        self.pending = still
        # keep only plans a pending (or a just-arriving) keyframe could still take
        horizon = min((k.stamp_ns for k in self.pending), default=newest)
        if horizon is not None:
            self.candidates = [c for c in self.candidates if c[0] >= horizon - self.tolerance_ns]

    def _record(self, kf: Keyframe, result: dict) -> None:
        target = kf.target
        metrics = sample_metrics(result['waypoints'], target) if target.full_future else None
        self.store.append({
            'token': target.token, 'ordinal': self.ordinal, 'scene_token': kf.scene_token,
            'scene_name': kf.scene_name, 'index_in_scene': kf.index_in_scene,
            'stamp_ns': kf.stamp_ns, 'full_future': target.full_future,
            'drivable_source': target.drivable_source, **result, 'metrics': metrics})
        self.ordinal += 1

    def finish(self) -> dict:
        """Settle every keyframe and write shard.json, predictions, metrics.json, report."""
        self._settle(final=True)
        records = self.store.ordered()
        ratios = Counter(r['pruning_ratio'] for r in records)
        pruners = Counter(r['pruner'] for r in records)
        spec = {'bag': self.bag, 'shard': [0, 1], 'convention': self.convention,
                'model': self.model,
                'pruner': pruners.most_common(1)[0][0] if pruners else '',
                'pruning_ratio': ratios.most_common(1)[0][0] if ratios else 0.0}
        write_json(self.out_dir / MANIFEST, spec | {
            'source': 'ros replay (replay_evaluator node)', 'expected': self.expected,
            'missing': self.missing, 'complete': not self.missing, 'limit': None})
        metrics = finish_run(self.out_dir, records, spec)
        metrics.update({'missing_predictions': len(self.missing), 'plans_received':
                        self.plans_seen, 'pruning_ratios_seen': sorted(ratios),
                        'match_tolerance_s': self.tolerance_ns / 1e9,
                        'malformed_messages': {k: self.malformed[k]
                                               for k in ('ground_truth', 'plan')}})
        write_json(self.out_dir / METRICS, metrics)
        return metrics
