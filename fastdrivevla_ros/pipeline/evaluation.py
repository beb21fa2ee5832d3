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

Matching: a plan is stamped with its reference camera image (within ~50 ms of the keyframe's
LiDAR stamp in nuScenes); each keyframe takes the plan nearest in time within `tolerance_s`.
Plans arrive in stamp order, so a keyframe is settled as soon as a plan newer than
stamp + tolerance arrives (or at `finish`); keyframes the node never planned (dropped as stale
or superseded while it was busy) are reported as missing, never invented.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        self.expected: list[str] = []
        self.missing: list[str] = []
        self.ordinal = len(self.store.records)
        self.plans_seen = 0

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
                        'match_tolerance_s': self.tolerance_ns / 1e9})
        write_json(self.out_dir / METRICS, metrics)
        return metrics
