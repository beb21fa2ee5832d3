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
settles, and a restarted evaluator resumes from that file like `fastdrivevla replay`;
metrics.json and report.md are written at the end (`finish`). A malformed message (no header,
wrong number of waypoints, a NaN) is counted and reported, never fatal.

One run per folder (eval/run_folder.py, as for the CLI): the evaluator holds the folder's lock
from construction to `close`, and writes the run manifest (shard.json) when the first plan
tells it the drive node's settings, before the first prediction. What a plan publishes is
recorded: pruner, pruning ratio, cameras and visual tokens per camera (which stand for the
resolution), plus the bag's identity, the model parameter and the match tolerance; what the
drive node does not publish (dtype, pruner options, per-view budgets, grammar, decode settings)
is listed under 'not_published'. A folder holding another run (other settings, another bag or
model, or a `fastdrivevla replay` run) is refused with ConfigError and nothing is written.

Settings changed at runtime (`ros2 param set` during a replay) lose nothing: the first plan's
settings own `out_dir`; plans made with any other settings go to a run folder of their own,
`out_dir/<pruner>-<ratio>[-n]/`, with its own manifest, lock, predictions, metrics and report,
so `fastdrivevla report out_dir out_dir/*/` compares them (one row each, with its sample count).
A keyframe is recorded in the folder of the settings of the plan it took; keyframes that no
plan covered are reported as missing by the first run.

Matching: a plan is stamped with its reference camera image (within ~50 ms of the keyframe's
LiDAR stamp in nuScenes); each keyframe takes the plan nearest in time within `tolerance_s`.
Plans arrive in stamp order, so a keyframe is settled as soon as a plan newer than
stamp + tolerance arrives (or at `finish`); keyframes the node never planned (dropped as stale
or superseded while it was busy) are reported as missing, never invented.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import itertools
import math
from pathlib import Path
import shutil
import time
from typing import Any, Callable

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.eval.metrics import DEFAULT_CONVENTION, sample_metrics
from fastdrivevla_ros.eval.report import finish_run
from fastdrivevla_ros.eval.run_folder import (
    bag_id, check_resumable, claim, code_version, lock_run_folder, MANIFEST,
    manifest_differences, read_manifest, write_json)
from fastdrivevla_ros.eval.store import METRICS, PREDICTIONS, PredictionStore

SOURCE = 'ros replay_evaluator'      # the manifest's writer (the CLI's is 'fastdrivevla replay')
# settings a prediction depends on that a PlannedTrajectory does not carry
NOT_PUBLISHED = ('dtype', 'pruner_options', 'view_ratios', 'max_pixels', 'grammar',
                 'forced_tokens', 'max_new_tokens', 'drive node code_version')


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
        'num_generated': int(fields['num_generated']),
        'decode_passes': int(fields['decode_passes']),
        'draft_tokens': int(fields.get('draft_tokens', 0)),
        'accepted_tokens': int(fields.get('accepted_tokens', 0)), 'timings_ms': timings,
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
               'tokens_kept', 'tokens_total', 'num_generated', 'decode_passes',
               'draft_tokens', 'accepted_tokens',
               'preprocess_ms', 'vision_ms',
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


@dataclass
class SettingsRun:
    """The run folder of one settings set met at runtime: lock, manifest, predictions."""

    out_dir: Path
    manifest: dict
    lock: Any
    store: PredictionStore
    expected: list[str] = field(default_factory=list)

    @classmethod
    def acquire(cls, out_dir: Path, manifest: dict) -> 'SettingsRun':
        """Lock and claim `out_dir` for `manifest`; ConfigError if it holds another run."""
        check_resumable(out_dir, manifest)
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = lock_run_folder(out_dir)
        try:
            claim(out_dir, manifest)
        except ConfigError:
            lock.release()
            raise
        store = PredictionStore(out_dir / PREDICTIONS)
        return cls(out_dir, manifest, lock, store, [r['token'] for r in store.ordered()])


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

    out_dir: run directory (created; locked until `close`; must not hold another run);
    tolerance_s: max |plan stamp - keyframe stamp|; convention: metric convention name;
    bag / model: recorded in the manifest (the bag by its identity, when given).
    """

    def __init__(self, out_dir, tolerance_s: float = 0.1, convention: str = DEFAULT_CONVENTION,
                 bag: str = '', model: str = ''):
        from fastdrivevla_ros.eval.metrics import convention as check_convention

        check_convention(convention)
        self.out_dir = Path(out_dir)
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.convention, self.bag, self.model = convention, bag, model
        has_id = bool(bag) and (Path(bag) / 'metadata.yaml').is_file()   # not a bare .mcap
        self.known = {'source': SOURCE, 'bag_id': bag_id(bag) if has_id else None,
                      'shard': [0, 1], 'model': model, 'code_version': code_version()}
        self.created = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.lock = lock_run_folder(self.out_dir)
        self.manifest: dict | None = None             # set by the first plan (claim)
        try:     # refuse another run's folder at once with what is known now, the rest later
            check_resumable(self.out_dir, self.known, keys=tuple(self.known))
        except ConfigError:
            self.lock.release()
            raise
        self.store = PredictionStore(self.out_dir / PREDICTIONS)
        self.pending: list[Keyframe] = []                 # keyframes not settled yet
        self.candidates: list[tuple] = []     # (stamp, result, SettingsRun|None) not used yet
        self.expected: list[str] = [r['token'] for r in self.store.ordered()]   # resumed
        self.missing: list[str] = []
        self.plans_seen = 0
        self.other_settings = 0                       # plans made with other settings
        self.other_runs: list[SettingsRun] = []       # their run folders
        self.malformed: Counter = Counter()           # 'ground_truth' / 'plan' -> count
        self.last_malformed = ''

    def plan_manifest(self, result: dict) -> dict:
        """Return the run manifest a plan implies: what the evaluator knows, None if unknown."""
        views = result['views']
        return self.known | {
            'bag': str(Path(self.bag).resolve()) if self.bag else '',
            'dtype': None, 'pruner': result['pruner'], 'pruner_options': None,
            'pruning_ratio': result['pruning_ratio'],
            'settings': {'cameras': [v['camera'] for v in views],
                         'camera_tokens_total': [v['tokens_total'] for v in views],
                         'match_tolerance_s': self.tolerance_ns / 1e9},
            'not_published': list(NOT_PUBLISHED)}

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
        return self.add_plan(stamp, result)

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

    def add_plan(self, stamp_ns: int, result: dict) -> str | None:
        """
        Register a published plan (result_from_trajectory(...) of a PlannedTrajectory).

        The first plan fixes the run's manifest (ConfigError if the folder holds another run);
        a later plan with other settings goes to that settings' own run folder (opened on its
        first plan: `other_runs` grows).
        """
        self.plans_seen += 1
        manifest = self.plan_manifest(result)
        if self.manifest is None:
            claim(self.out_dir, manifest)
            self.manifest = manifest
        run = None
        if manifest_differences(self.manifest, manifest):
            self.other_settings += 1
            run = self._settings_run(manifest)
        self.candidates.append((int(stamp_ns), result, run))
        self._settle(final=False)
        return None

    def _settings_run(self, manifest: dict) -> SettingsRun:
        """Return the run folder for `manifest`, opening the next free name the first time."""
        for run in self.other_runs:
            if not manifest_differences(run.manifest, manifest):
                return run
        base = f"{manifest['pruner']}-{manifest['pruning_ratio']:.2f}"
        for n in itertools.count(1):
            try:
                run = SettingsRun.acquire(self.out_dir / (base if n == 1 else f'{base}-{n}'),
                                          manifest)
            except ConfigError:     # another settings set's (or writer's) folder: next name
                continue
            self.other_runs.append(run)
            return run

    def _settle(self, final: bool) -> None:
        newest = max((c[0] for c in self.candidates), default=None)
        still = []
        for kf in self.pending:
            if not final and (newest is None or newest <= kf.stamp_ns + self.tolerance_ns):
                still.append(kf)       # a closer plan may still come
                continue
            near = [(abs(s - kf.stamp_ns), r, run) for s, r, run in self.candidates
                    if abs(s - kf.stamp_ns) <= self.tolerance_ns]
            if near:
                _, result, run = min(near, key=lambda item: item[0])
                self._record(kf, result, run)
            else:
                self.missing.append(kf.target.token)
        self.pending = still
        # keep only plans a pending (or a just-arriving) keyframe could still take
        horizon = min((k.stamp_ns for k in self.pending), default=newest)
        if horizon is not None:
            self.candidates = [c for c in self.candidates if c[0] >= horizon - self.tolerance_ns]

    def _record(self, kf: Keyframe, result: dict, run: SettingsRun | None = None) -> None:
        target = kf.target
        metrics = sample_metrics(result['waypoints'], target) if target.full_future else None
        store = self.store if run is None else run.store
        if run is not None:
            run.expected.append(target.token)
            self.expected.remove(target.token)     # the first run did not get it
        store.append({
            'token': target.token, 'ordinal': len(store.records), 'scene_token': kf.scene_token,
            'scene_name': kf.scene_name, 'index_in_scene': kf.index_in_scene,
            'stamp_ns': kf.stamp_ns, 'full_future': target.full_future,
            'drivable_source': target.drivable_source, **result, 'metrics': metrics})

    def finish(self) -> dict | None:
        """
        Settle every keyframe and write shard.json, predictions, metrics.json, report.

        Returns the metrics, or None (nothing written) when no plan fixed the run's manifest.
        """
        if self.manifest is None:
            return None
        self._settle(final=True)
        records = self.store.ordered()
        spec = self.manifest | {'convention': self.convention}
        write_json(self.out_dir / MANIFEST, spec | {
            'expected': self.expected, 'missing': self.missing, 'complete': not self.missing,
            'limit': None})
        metrics = finish_run(self.out_dir, records, spec)
        metrics.update({'missing_predictions': len(self.missing), 'plans_received':
                        self.plans_seen, 'plans_with_other_settings': self.other_settings,
                        'pruning_ratios_seen': sorted({r['pruning_ratio'] for r in records}),
                        'match_tolerance_s': self.tolerance_ns / 1e9,
                        'runs_with_other_settings': {
                            run.out_dir.name: len(run.store.records) for run in self.other_runs},
                        'malformed_messages': {k: self.malformed[k]
                                               for k in ('ground_truth', 'plan')}})
        write_json(self.out_dir / METRICS, metrics)
        for run in self.other_runs:
            spec = run.manifest | {'convention': self.convention}
            write_json(run.out_dir / MANIFEST, spec | {
                'expected': run.expected, 'missing': [], 'complete': True, 'limit': None})
            finish_run(run.out_dir, run.store.ordered(), spec)
        return metrics

    def close(self) -> None:
        """Release the folders' locks; remove the folder if this evaluator made it for nothing."""
        for run in self.other_runs:
            run.lock.release()
        self.lock.release()
        if self.created and self.manifest is None and read_manifest(self.out_dir) is None:
            shutil.rmtree(self.out_dir, ignore_errors=True)
