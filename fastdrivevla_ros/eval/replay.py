"""`fastdrivevla replay` / `merge`: deterministic open-loop evaluation by bag replay.

Every keyframe of a converted bag (read with rosbags, never dropping one) goes through
DrivingVLA.plan with its ego history from the bag; each result is appended to
`predictions.jsonl` and flushed at once, so a killed run resumes where it stopped (a truncated
last line is discarded). `--shard i/n` evaluates every n-th keyframe (or, for temporal pruners
that carry state from frame to frame, every n-th scene), and `merge` joins the shards after
checking that every keyframe is there exactly once. Outputs per run directory:

  predictions.jsonl   one line per keyframe: token, waypoints, status, timings, per-step metrics
  shard.json          what this run covers (bag, shard, expected tokens, complete or not)
  metrics.json        samples, convention, l2_cm, collision_pct, intersection_pct (1s/2s/3s/avg)
  report.md, *.png    the paper's Table 1 layout and plots (eval/report.py)
  predictions_bag/    optional (--output-bag): predicted paths and token heatmaps for Foxglove/RViz
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from fastdrivevla_ros.errors import ConfigError, DataError, InputError
from fastdrivevla_ros.eval.metrics import DEFAULT_CONVENTION, convention, sample_metrics, \
    summarize
from fastdrivevla_ros.eval.run_folder import MANIFEST, bag_id, code_version, \
    manifest_differences, naming, open_run_folder, write_json

PREDICTIONS, METRICS = "predictions.jsonl", "metrics.json"
GT_PRUNER = "ground_truth"


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0-based i < n) -> (i, n)."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


# ------------------------------------------------------------------------------ JSONL store
class PredictionStore:
    """predictions.jsonl: append-and-flush, tolerant of a run killed mid-line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good = raw.rfind(b"\n") + 1          # everything after the last newline is a torn write
        for n, line in enumerate(raw[:good].splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{self.path}:{n} is not valid JSON ({e}); only a torn LAST "
                                "line is repaired automatically") from e
            if rec.get("token") in self.records:
                raise DataError(f"{self.path}:{n} duplicates sample {rec.get('token')}")
            self.records[rec["token"]] = rec
        if good < len(raw):                  # drop the torn tail so appends start on a new line
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def __contains__(self, token: str) -> bool:
        return token in self.records

    def append(self, record: dict) -> None:
        if record["token"] in self.records:
            raise DataError(f"sample {record['token']} is already in {self.path}")
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with naming(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records[record["token"]] = record

    def ordered(self) -> list[dict]:
        return sorted(self.records.values(), key=lambda r: r["ordinal"])


def run_manifest(bag, shard: tuple[int, int], *, model: str = "", dtype: str = "",
                 pruner: str = GT_PRUNER, keeps_all: bool = True, settings=None,
                 pruner_options: dict | None = None) -> dict:
    """Every setting a prediction depends on (defaults: the ground-truth self-check).

    settings: the engine's PlannerSettings (cameras, resolution, ratios, per-view budgets,
    grammar, decode settings, all of its fields). Written before the first prediction and
    compared on resume (run_folder.MANIFEST_KEYS); `bag` (the path) is informational."""
    from dataclasses import asdict

    ratio = 0.0 if keeps_all or settings is None else float(settings.pruning_ratio)
    return json.loads(json.dumps({
        "bag": str(Path(bag).resolve()), "bag_id": bag_id(bag), "shard": list(shard),
        "model": str(model), "dtype": dtype, "pruner": pruner,
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
        self.complete, self.ran = True, 0

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
                    "timings_ms": {"total": 0.0}, "views": []}
        if not self.temporal:
            self.engine.pruner.reset()   # every sample independent: shards and resumes agree
        try:
            return self.engine.plan(frame.compressed(self.cameras), frame.history).to_json()
        except (InputError, DataError) as e:
            if self.on_error == "stop":
                raise DataError(f"keyframe {frame.token} ({frame.scene_name} "
                                f"#{frame.index_in_scene}): {e}") from e
            return {"waypoints": [[0.0, 0.0]] * 6, "status": "error", "reason": str(e),
                    "text": "", "pruner": self.engine.pruner.name,
                    "pruning_ratio": self.engine.settings.pruning_ratio, "tokens_kept": 0,
                    "tokens_total": 0, "num_generated": 0, "decode_passes": 0,
                    "timings_ms": {}, "views": []}

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
        rep = _Replayer(engine, store, gt_as_prediction, on_error)
        t0 = time.perf_counter()
        with tqdm(total=total, desc=f"replay {shard[0]}/{shard[1]}", unit="frame",
                  disable=not progress) as bar:
            rep.run(frames, shard, limit, bar)
        elapsed = time.perf_counter() - t0
        write_json(out_dir / MANIFEST, manifest | {
            "convention": name, "expected": rep.expected, "complete": rep.complete,
            "limit": limit, "temporal_sharding": rep.temporal})
        metrics = finish_run(out_dir, store.ordered(), manifest | {"convention": name},
                             baseline=baseline,
                             throughput=(rep.ran / elapsed) if rep.ran else None)
        if output_bag:
            write_output_bag(bag, store.ordered(), out_dir / "predictions_bag")
    return metrics


def run_metrics(records: list[dict], spec_like: dict, name: str,
                throughput: float | None = None) -> dict:
    """metrics.json content from prediction records (per-sample metrics already inside)."""
    scored = [r["metrics"] for r in records if r.get("metrics")]
    out = summarize(scored, name)
    timings: dict[str, list[float]] = {}
    for r in records:
        for k, v in (r.get("timings_ms") or {}).items():
            timings.setdefault(k, []).append(float(v))
    total_ms = sum(timings.get("total", []))
    out.update({
        "frames": len(records),
        "parse_failed": sum(r["status"] == "parse_failed" for r in records),
        "errors": [r["token"] for r in records if r["status"] == "error"],
        "pruner": spec_like["pruner"], "pruning_ratio": spec_like["pruning_ratio"],
        "view_ratios": (spec_like.get("settings") or {}).get("view_ratios"),
        "model": spec_like.get("model", ""), "bag": spec_like["bag"],
        "drivable_source": sorted({r.get("drivable_source", "none") for r in records}),
        "tokens_kept_mean": _mean([r["tokens_kept"] for r in records]),
        "tokens_total_mean": _mean([r["tokens_total"] for r in records]),
        **kept_fractions(records),
        "timings_ms_mean": {k: round(float(np.mean(v)), 3) for k, v in timings.items()},
        "samples_per_s_model": round(1e3 * len(records) / total_ms, 4) if total_ms else None,
        "samples_per_s_wall": round(throughput, 4) if throughput else None,
    })
    return out


def kept_fractions(records: list[dict]) -> dict:
    """What the run really fed the LLM: mean kept fraction of visual tokens, overall and per
    camera (per-view budgets make the configured pruning_ratio meaningless on its own)."""
    overall, per_view = [], {}
    for r in records:
        if r.get("tokens_total"):
            overall.append(r["tokens_kept"] / r["tokens_total"])
        for v in r.get("views") or []:
            kept, total = _view_counts(v)
            if total:
                per_view.setdefault(v["camera"], []).append(kept / total)
    return {"kept_fraction_mean": round(float(np.mean(overall)), 4) if overall else None,
            "view_kept_fraction": {c: round(float(np.mean(f)), 4) for c, f in per_view.items()}}


def _view_counts(view: dict) -> tuple[int, int]:
    """(kept, total) of one view record: engine records carry indices, node records counts."""
    if "kept" in view and "grid" in view:
        return len(view["kept"]), int(view["grid"][0]) * int(view["grid"][1])
    return int(view.get("tokens_kept", 0)), int(view.get("tokens_total", 0))


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def finish_run(out_dir: Path, records: list[dict], spec: dict, baseline=None,
               throughput: float | None = None) -> dict:
    """metrics.json + report.md + plots for a run (or merged) directory; `spec` holds at least
    bag, pruner, pruning_ratio, model and convention (the manifest does)."""
    from fastdrivevla_ros.eval.report import write_run_report

    metrics = run_metrics(records, spec, spec["convention"], throughput)
    write_json(out_dir / METRICS, metrics)
    write_run_report(out_dir, metrics, baseline, records)
    return metrics


# ------------------------------------------------------------------------------ merge
def _load_run(run_dir: Path) -> tuple[dict, PredictionStore]:
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise DataError(f"{run_dir} is not a replay run directory (no {MANIFEST})")
    return json.loads((run_dir / MANIFEST).read_text()), PredictionStore(run_dir / PREDICTIONS)


def _check_same_run(runs: list[tuple[dict, PredictionStore]], run_dirs: list) -> None:
    """Shards of one evaluation: manifests equal except the shard index (and convention)."""
    first = runs[0][0]
    for (m, _), d in zip(runs[1:], run_dirs[1:]):
        diff = manifest_differences(first | {"shard": None}, m | {"shard": None})
        if m.get("convention") != first.get("convention"):
            diff.append(f"convention: {first.get('convention')!r} != {m.get('convention')!r}")
        if diff:
            raise DataError(f"{run_dirs[0]} and {d} are not shards of one run "
                            f"({'; '.join(diff)}); merge shards of one run only")


def merge_runs(out_dir, run_dirs: list, baseline=None) -> dict:
    """Join shard runs of ONE evaluation into out_dir, checking nothing is missing or twice."""
    runs = [_load_run(Path(d)) for d in run_dirs]
    if not runs:
        raise ConfigError("merge needs at least one run directory")
    _check_same_run(runs, run_dirs)
    first = runs[0][0]
    n = first["shard"][1]
    shards = sorted(m["shard"][0] for m, _ in runs)
    if any(m["shard"][1] != n for m, _ in runs) or shards != list(range(n)):
        raise DataError(f"need shards 0..{n - 1} of {n} exactly once, got {shards}")
    records, seen = [], {}
    for (manifest, store), run_dir in zip(runs, run_dirs):
        tag = f"{manifest['shard'][0]}/{n}"
        if not manifest.get("complete"):
            raise DataError(f"shard {tag} ({run_dir}) did not finish (limit or stopped); rerun it")
        missing = [t for t in manifest["expected"] if t not in store]
        if missing:
            raise DataError(f"shard {tag} lacks {len(missing)} prediction(s), e.g. {missing[:3]}; "
                            "rerun it to resume")
        for rec in store.ordered():
            if rec["token"] in seen:
                raise DataError(f"sample {rec['token']} appears in shards {seen[rec['token']]} "
                                f"and {tag}")
            seen[rec["token"]] = tag
            records.append(rec)
    records.sort(key=lambda r: r["ordinal"])
    out_dir = Path(out_dir)
    if (out_dir / PREDICTIONS).exists():
        raise DataError(f"{out_dir / PREDICTIONS} exists; merge into an empty directory")
    spec = {k: v for k, v in first.items() if k not in ("expected", "complete", "limit")} | \
        {"shard": [0, 1]}
    with open_run_folder(out_dir, spec, resumable=False):
        store = PredictionStore(out_dir / PREDICTIONS)
        for rec in records:
            store.append(rec)
        write_json(out_dir / MANIFEST, spec | {"expected": [r["token"] for r in records],
                                               "complete": True, "limit": None,
                                               "merged_from": [str(d) for d in run_dirs]})
        return finish_run(out_dir, records, spec, baseline)


# ------------------------------------------------------------------------------ output bag
def write_output_bag(bag, records: list[dict], out: Path, distro: str = "jazzy") -> None:
    """Predicted paths (nav_msgs/Path, base_link at the keyframe stamp) and, where the run
    kept token indices, heatmaps of the kept tokens (CompressedImage) for Foxglove / RViz."""
    from fastdrivevla_ros.data import topics
    from fastdrivevla_ros.data.bag_reader import BagFrames
    from fastdrivevla_ros.data.nuscenes_bag import BagWriter, staged_bag

    by_token = {r["token"]: r for r in records}
    cameras = sorted({v["camera"] for r in records for v in _heatmap_views(r)})
    types = {topics.PREDICTED_PATH: "nav_msgs/msg/Path"}
    types |= {_heatmap_topic(c): "sensor_msgs/msg/CompressedImage" for c in cameras}
    with staged_bag(Path(out)) as tmp:
        writer = BagWriter(tmp, "mcap", distro)
        try:
            writer.open(types)
            for frame in BagFrames(bag, cameras=cameras or None, with_images=bool(cameras)):
                if frame.token in by_token:
                    _write_prediction(writer, frame, by_token[frame.token])
            writer.close()
        except BaseException:
            writer.abort()
            raise


def _write_prediction(writer, frame, rec: dict) -> None:
    """One keyframe's predicted path and kept-token heatmaps."""
    from fastdrivevla_ros.data import topics

    f = writer.factory
    pts = np.asarray(rec["waypoints"], float)
    steps = np.diff(np.vstack([[0.0, 0.0], pts]), axis=0)
    yaws = np.arctan2(steps[:, 1], steps[:, 0])
    stamps = [frame.stamp_ns + int((k + 1) * 0.5e9) for k in range(len(pts))]
    writer.write(topics.PREDICTED_PATH, frame.stamp_ns,
                 f.path(frame.stamp_ns, topics.EGO_FRAME, pts, yaws, stamps))
    for view in _heatmap_views(rec):
        jpeg = _heatmap_jpeg(frame, view)
        writer.write(_heatmap_topic(view["camera"]), frame.stamp_ns,
                     f.compressed_image(frame.stamp_ns, view["camera"], jpeg))


def _heatmap_views(record: dict) -> list[dict]:
    """Views whose kept indices were recorded (live-node records only carry counts)."""
    return [v for v in record.get("views", []) if "kept" in v and "grid" in v]


def _heatmap_topic(camera: str) -> str:
    return f"/planning/heatmap/{camera}/compressed"


def _heatmap_jpeg(frame, view: dict) -> bytes:
    """Kept/pruned overlay of one view, rebuilt from the kept indices in the JSONL."""
    import io

    from PIL import Image

    from fastdrivevla_ros.viz.heatmap import token_overlay
    from fastdrivevla_ros.vla.result import ViewResult

    rows, cols = view["grid"]
    rgb = frame.images([view["camera"]])[view["camera"]]
    resized = np.asarray(Image.fromarray(rgb).resize((cols * 28, rows * 28), Image.BICUBIC))
    overlay = token_overlay(ViewResult(view["camera"], (rows, cols),
                                       np.asarray(view["kept"], int), None, resized))
    buf = io.BytesIO()
    Image.fromarray(overlay).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _fmt(d: dict) -> str:
    return "/".join("-" if d.get(k) is None else f"{d[k]:.2f}" for k in ("1s", "2s", "3s", "avg"))


def headline(m: dict, out) -> str:
    """One line for the terminal: sample count and the three metrics at 1s/2s/3s/avg."""
    return (f"{out}: {m['samples']} samples ({m['convention']}), L2 cm {_fmt(m['l2_cm'])}, "
            f"collision % {_fmt(m['collision_pct'])}, intersection % "
            f"{_fmt(m['intersection_pct'])}, parse failures {m['parse_failed']}")
