"""Deterministic open-loop evaluation by bag replay (`fastdrivevla replay`).

Every keyframe of a converted bag (read with rosbags, never dropping one) goes through
DrivingVLA.plan with its ego history from the bag; each result is appended to the run's
PredictionStore (eval/store.py) at once, so a killed run resumes where it stopped. A shard
(i, n) evaluates every n-th keyframe (or, for temporal pruners that carry state from frame to
frame, every n-th scene); eval/merge.py joins the shards. Outputs per run directory:
predictions.jsonl, shard.json (eval/run_folder.py: what this run covers), metrics.json,
report.md and plots, and optionally predictions_bag/ (eval/output_bag.py).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fastdrivevla_ros.errors import ConfigError, DataError, InputError
from fastdrivevla_ros.eval.metrics import DEFAULT_CONVENTION, convention, sample_metrics
from fastdrivevla_ros.eval.run_folder import MANIFEST, bag_id, code_version, open_run_folder, \
    weights_identity, write_json
from fastdrivevla_ros.eval.report import finish_run
from fastdrivevla_ros.eval.store import PREDICTIONS, PredictionStore
from fastdrivevla_ros.vla.draft import PreviousPlan

GT_PRUNER = "ground_truth"
SOURCE = "fastdrivevla replay"       # the manifest's writer (the ROS evaluator's differs)


def run_manifest(bag, shard: tuple[int, int], *, model: str = "", dtype: str = "",
                 pruner: str = GT_PRUNER, keeps_all: bool = True, settings=None,
                 pruner_options: dict | None = None) -> dict:
    """Every setting a prediction depends on (defaults: the ground-truth self-check).

    settings: the engine's PlannerSettings (cameras, resolution, ratios, per-view budgets,
    grammar, decode settings, all of its fields). Written before the first prediction and
    compared on resume (run_folder.MANIFEST_KEYS): the bag and the weights by their content
    (`bag_id`, `identity`); `bag` (the path) is informational."""
    from dataclasses import asdict

    ratio = 0.0 if keeps_all or settings is None else float(settings.pruning_ratio)
    return json.loads(json.dumps({
        "source": SOURCE, "bag": str(Path(bag).resolve()), "bag_id": bag_id(bag),
        "shard": list(shard), "model": str(model),
        "identity": weights_identity(str(model), pruner_options), "dtype": dtype, "pruner": pruner,
        "pruner_options": pruner_options or {}, "pruning_ratio": ratio,
        "settings": asdict(settings) if settings is not None else {},
        "code_version": code_version()}))


def engine_manifest(bag, shard, engine, model: str = "", pruner_options=None) -> dict:
    """run_manifest of a replay through `engine` (None: the ground-truth self-check)."""
    if engine is None:
        return run_manifest(bag, shard, model=model)
    return run_manifest(bag, shard, model=model,
                        dtype=str(getattr(engine.model, "dtype", "")).removeprefix("torch."),
                        pruner=engine.pruner.name, keeps_all=engine.pruner.keeps_all,
                        settings=engine.settings, pruner_options=pruner_options)


def _is_temporal(engine) -> bool:
    """Pruners that carry state from frame to frame (VLA-Pruner) must see whole scenes."""
    return engine is not None and bool(getattr(engine.pruner, "record_decode_layers", ()))


class _Replayer:
    """Runs the frames of one shard in bag order, skipping (or, for temporal pruners,
    silently re-playing) those already in the store."""

    def __init__(self, engine, store: PredictionStore, gt_as_prediction: bool,
                 on_error: str = "stop"):
        if on_error not in ("stop", "skip"):
            raise ConfigError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
        self.engine, self.store, self.on_error = engine, store, on_error
        self.gt_mode = gt_as_prediction
        self.temporal = _is_temporal(engine)
        self.cameras = tuple(engine.settings.cameras) if engine is not None else ()
        self.expected: list[str] = []
        self.complete, self.ran, self.resumed = True, 0, 0
        self.previous, self.previous_scene = PreviousPlan(), None   # draft `previous`

    def run(self, frames, shard: tuple[int, int], limit: int | None, bar) -> None:
        i, n = shard
        scene, scene_ordinal, warm = None, -1, []
        for frame in frames:
            bar.update(1)
            if frame.scene_token != scene:
                scene, scene_ordinal, warm = frame.scene_token, scene_ordinal + 1, []
                if self.temporal:
                    self.engine.pruner.reset()
            if (scene_ordinal if self.temporal else frame.ordinal) % n != i:
                continue
            if limit is not None and len(self.expected) >= limit:
                self.complete = False
                return
            self.expected.append(frame.token)
            if frame.token in self.store:
                self.resumed += 1
                if self.temporal:
                    warm.append(frame)   # re-run (not re-write) if a later frame needs its state
                continue
            for old in warm:             # temporal pruner resumed mid-scene: rebuild its state
                self.plan(old)
            warm = []
            self.store.append(self.record(frame, self.plan(frame)))
            self.ran += 1

    def plan(self, frame) -> dict:
        """Plan one keyframe -> the PlanResult's JSON (or the GT itself in self-check mode)."""
        if self.gt_mode:
            return {"waypoints": frame.target.future.tolist(), "status": "ok",
                    "reason": "", "text": "", "pruner": GT_PRUNER, "pruning_ratio": 0.0,
                    "tokens_kept": 0, "tokens_total": 0, "num_generated": 0, "decode_passes": 0,
                    "draft_tokens": 0, "accepted_tokens": 0,
                    "timings_ms": {"total": 0.0}, "views": []}
        if not self.temporal:
            self.engine.pruner.reset()   # every sample independent: shards and resumes agree
        try:
            return self._plan(frame).to_json()
        except (InputError, DataError) as e:
            if self.on_error == "stop":
                raise DataError(f"keyframe {frame.token} ({frame.scene_name} "
                                f"#{frame.index_in_scene}): {e}") from e
            return {"waypoints": [[0.0, 0.0]] * 6, "status": "error", "reason": str(e),
                    "text": "", "pruner": self.engine.pruner.name,
                    "pruning_ratio": self.engine.settings.pruning_ratio, "tokens_kept": 0,
                    "tokens_total": 0, "num_generated": 0, "decode_passes": 0,
                    "draft_tokens": 0, "accepted_tokens": 0, "timings_ms": {}, "views": []}

    def _plan(self, frame):
        """The engine's plan; with draft `previous`, drafted from this scene's last plan."""
        stamp_s, draft = frame.stamp_ns * 1e-9, None
        if frame.scene_token != self.previous_scene:     # a stream per scene
            self.previous, self.previous_scene = PreviousPlan(), frame.scene_token
        if self.engine.settings.draft == "previous":
            draft = self.previous.draft(frame.ego_pose, stamp_s)
        result = self.engine.plan(frame.compressed(self.cameras), frame.history, draft=draft)
        self.previous.remember(result.waypoints if result.ok else None, frame.ego_pose, stamp_s)
        return result

    def record(self, frame, result: dict) -> dict:
        target = frame.target
        scored = target.full_future and result["status"] != "error"
        metrics = sample_metrics(result["waypoints"], target) if scored else None
        return {"token": frame.token, "ordinal": frame.ordinal, "scene_token": frame.scene_token,
                "scene_name": frame.scene_name, "index_in_scene": frame.index_in_scene,
                "stamp_ns": frame.stamp_ns, "full_future": target.full_future,
                "drivable_source": target.drivable_source, **result, "metrics": metrics}


def replay_bag(bag, engine, out_dir, shard: tuple[int, int] = (0, 1), limit: int | None = None,
               *, gt_as_prediction: bool = False, name: str = DEFAULT_CONVENTION,
               baseline: str | Path | None = None, output_bag: bool = False,
               model: str = "", pruner_options: dict | None = None, on_error: str = "stop",
               progress: bool = True) -> dict:
    """Replay `bag` through `engine` (None with gt_as_prediction) into `out_dir`; returns the
    metrics dict also written to metrics.json. Resumes from an existing predictions.jsonl
    of the SAME run (run_folder: manifest checked, folder locked).

    on_error: "stop" raises on an unusable keyframe (bad image ...); "skip" records it with
    status "error" (listed in metrics.json, not scored) and goes on."""
    from tqdm import tqdm

    from fastdrivevla_ros.data.bag_reader import BagFrames

    convention(name)
    if engine is None and not gt_as_prediction:
        raise ConfigError("replay needs an engine (or gt_as_prediction=True)")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    cameras = tuple(engine.settings.cameras) if not gt_as_prediction else None
    frames = BagFrames(bag, cameras=cameras, with_images=not gt_as_prediction)
    total = len(frames)            # reads the bag's index: a broken bag fails before any output
    manifest = engine_manifest(bag, shard, None if gt_as_prediction else engine, model,
                               pruner_options)
    with open_run_folder(out_dir, manifest) as out_dir:
        store = PredictionStore(out_dir / PREDICTIONS)
        if store.records:
            print(f"{out_dir}: resuming; {len(store.records)} keyframes already done",
                  file=sys.stderr)
        rep = _Replayer(engine, store, gt_as_prediction, on_error)
        t0 = time.perf_counter()
        with tqdm(total=total, desc=f"replay {shard[0]}/{shard[1]}", unit="frame",
                  disable=not progress) as bar:
            rep.run(frames, shard, limit, bar)
        elapsed = time.perf_counter() - t0
        in_shard = len(rep.expected) if rep.complete else (
            None if rep.temporal else len(range(shard[0], total, shard[1])))   # M of "N of M"
        write_json(out_dir / MANIFEST, manifest | {
            "convention": name, "expected": rep.expected, "complete": rep.complete,
            "limit": limit, "temporal_sharding": rep.temporal, "keyframes_in_shard": in_shard})
        # a folder may hold more predictions than this run covers (an earlier, longer --limit):
        # the run's files describe exactly the keyframes its manifest lists
        records = [store.records[t] for t in rep.expected if t in store]
        metrics = finish_run(out_dir, records, manifest | {
            "convention": name, "keyframes_in_shard": in_shard, "complete": rep.complete},
            baseline=baseline, throughput=(rep.ran / elapsed) if rep.ran else None)
        if output_bag:
            from fastdrivevla_ros.eval.output_bag import write_output_bag

            write_output_bag(bag, records, out_dir / "predictions_bag")
    return metrics
