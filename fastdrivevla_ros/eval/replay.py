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

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastdrivevla_ros.errors import ConfigError, DataError, InputError
from fastdrivevla_ros.eval.metrics import DEFAULT_CONVENTION, CONVENTIONS, convention, \
    sample_metrics, summarize

PREDICTIONS, MANIFEST, METRICS = "predictions.jsonl", "shard.json", "metrics.json"
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
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records[record["token"]] = record

    def ordered(self) -> list[dict]:
        return sorted(self.records.values(), key=lambda r: r["ordinal"])


def _json_safe(value):
    """NaN/inf -> None so every file is strict JSON."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=1, allow_nan=False))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ replay
@dataclass
class RunSpec:
    """What a run directory holds; a resumed run must match it."""

    bag: str
    shard: tuple[int, int]
    pruner: str
    pruning_ratio: float
    convention: str
    model: str = ""
    settings: dict = field(default_factory=dict)

    def key(self) -> dict:
        return {"bag": self.bag, "shard": list(self.shard), "pruner": self.pruner,
                "pruning_ratio": self.pruning_ratio}

    def resume_key(self) -> dict:
        """What must not change between a run and its resumption (model settings too:
        e.g. a budget search changing per-view ratios needs a fresh directory)."""
        return self.key() | {"model": self.model, "settings": self.settings}


def _check_resume(out_dir: Path, spec: RunSpec) -> None:
    path = out_dir / MANIFEST
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    mine = spec.resume_key()
    diff = {k: (old.get(k), v) for k, v in mine.items() if old.get(k) != v}
    if diff:
        raise ConfigError(f"{out_dir} holds a different run ({diff}); use another --out")


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
               model: str = "", on_error: str = "stop", progress: bool = True) -> dict:
    """Replay `bag` through `engine` (None with gt_as_prediction) into `out_dir`; returns the
    metrics dict also written to metrics.json. Resumes from an existing predictions.jsonl.

    on_error: "stop" raises on an unusable keyframe (bad image ...); "skip" records it with
    status "error" (listed in metrics.json, not scored) and goes on."""
    from tqdm import tqdm

    from fastdrivevla_ros.data.bag_reader import BagFrames

    convention(name)
    if engine is None and not gt_as_prediction:
        raise ConfigError("replay needs an engine (or gt_as_prediction=True)")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = _spec(bag, engine, shard, name, model, gt_as_prediction)
    _check_resume(out_dir, spec)
    store = PredictionStore(out_dir / PREDICTIONS)
    rep = _Replayer(engine, store, gt_as_prediction, on_error)
    frames = BagFrames(bag, cameras=rep.cameras or None, with_images=not gt_as_prediction)
    t0 = time.perf_counter()
    with tqdm(total=len(frames), desc=f"replay {shard[0]}/{shard[1]}", unit="frame",
              disable=not progress) as bar:
        rep.run(frames, shard, limit, bar)
    elapsed = time.perf_counter() - t0
    write_json(out_dir / MANIFEST, spec.resume_key() | {
        "convention": name, "expected": rep.expected, "complete": rep.complete,
        "limit": limit, "temporal_sharding": rep.temporal})
    metrics = finish_run(out_dir, store.ordered(), spec, baseline=baseline,
                         throughput=(rep.ran / elapsed) if rep.ran else None)
    if output_bag:
        write_output_bag(bag, store.ordered(), out_dir / "predictions_bag")
    return metrics


def _spec(bag, engine, shard, name, model, gt_mode) -> RunSpec:
    if gt_mode:
        return RunSpec(str(Path(bag).resolve()), tuple(shard), GT_PRUNER, 0.0, name, model)
    s = engine.settings
    ratio = 0.0 if engine.pruner.keeps_all else float(s.pruning_ratio)
    settings = {"cameras": list(s.cameras), "max_pixels": s.max_pixels,
                "image_size": list(s.image_size) if s.image_size else None,
                "view_ratios": list(s.view_ratios) if s.view_ratios else None,
                "max_new_tokens": s.max_new_tokens, "constrained": s.constrained,
                "forced_tokens": s.forced_tokens}
    return RunSpec(str(Path(bag).resolve()), tuple(shard), engine.pruner.name, ratio, name,
                   model, settings)


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
        "model": spec_like.get("model", ""), "bag": spec_like["bag"],
        "drivable_source": sorted({r.get("drivable_source", "none") for r in records}),
        "tokens_kept_mean": _mean([r["tokens_kept"] for r in records]),
        "tokens_total_mean": _mean([r["tokens_total"] for r in records]),
        "timings_ms_mean": {k: round(float(np.mean(v)), 3) for k, v in timings.items()},
        "samples_per_s_model": round(1e3 * len(records) / total_ms, 4) if total_ms else None,
        "samples_per_s_wall": round(throughput, 4) if throughput else None,
    })
    return out


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def finish_run(out_dir: Path, records: list[dict], spec: RunSpec | dict, baseline=None,
               throughput: float | None = None) -> dict:
    """metrics.json + report.md + plots for a run (or merged) directory."""
    from fastdrivevla_ros.eval.report import write_run_report

    spec_like = spec.key() | {"model": spec.model, "convention": spec.convention} \
        if isinstance(spec, RunSpec) else spec
    metrics = run_metrics(records, spec_like, spec_like["convention"], throughput)
    write_json(out_dir / METRICS, metrics)
    write_run_report(out_dir, metrics, baseline)
    return metrics


# ------------------------------------------------------------------------------ merge
def _load_run(run_dir: Path) -> tuple[dict, PredictionStore]:
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise DataError(f"{run_dir} is not a replay run directory (no {MANIFEST})")
    return json.loads((run_dir / MANIFEST).read_text()), PredictionStore(run_dir / PREDICTIONS)


def merge_runs(out_dir, run_dirs: list, baseline=None) -> dict:
    """Join shard runs of ONE evaluation into out_dir, checking nothing is missing or twice."""
    runs = [_load_run(Path(d)) for d in run_dirs]
    if not runs:
        raise ConfigError("merge needs at least one run directory")
    first = runs[0][0]
    for key in ("bag", "pruner", "pruning_ratio", "convention"):
        values = {json.dumps(m.get(key)) for m, _ in runs}
        if len(values) > 1:
            raise DataError(f"runs disagree on {key}: {sorted(values)}; merge shards of one run")
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
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / PREDICTIONS).exists():
        raise DataError(f"{out_dir / PREDICTIONS} exists; merge into an empty directory")
    store = PredictionStore(out_dir / PREDICTIONS)
    for rec in records:
        store.append(rec)
    spec = {k: first[k] for k in ("bag", "pruner", "pruning_ratio", "convention")} | \
        {"model": first.get("model", ""), "shard": [0, 1]}
    write_json(out_dir / MANIFEST, spec | {"settings": first.get("settings", {}),
                                           "expected": [r["token"] for r in records],
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


# ------------------------------------------------------------------------------ CLI
def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", help="bag directory written by `fastdrivevla convert`")
    p.add_argument("--model", help="Qwen2.5-VL checkpoint directory or hub id")
    p.add_argument("--pruner", default="none")
    p.add_argument("--pruning-ratio", type=float, default=0.0)
    p.add_argument("--pruner-weights", help="pruner weights directory (e.g. ReconPruner)")
    p.add_argument("--view-ratios", type=float, nargs="+", metavar="P",
                   help="per-camera pruning ratios in --cameras order (Prune2Drive budgets; "
                   "replace --pruning-ratio per view)")
    p.add_argument("--budgets", metavar="YAML",
                   help="parameter file written by `fastdrivevla search-budgets` (or the node's "
                   "YAML): its `cameras` and `view_ratios` are used")
    p.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    p.add_argument("--shard", default="0/1", help="evaluate shard i of n (0-based), e.g. 1/4")
    p.add_argument("--limit", type=int, help="only the first N keyframes of the shard")
    p.add_argument("--ground-truth-as-prediction", action="store_true",
                   help="self-check: evaluate the bag's own GT futures (no model needed)")
    p.add_argument("--baseline", help="unpruned run directory for the Rel. column")
    p.add_argument("--convention", default=DEFAULT_CONVENTION, choices=sorted(CONVENTIONS))
    p.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                   help="on an unusable keyframe: stop, or record it as an error and go on")
    p.add_argument("--output-bag", action="store_true",
                   help="also write predictions_bag/ (paths + heatmaps) for Foxglove / RViz")
    p.add_argument("--cameras", nargs="+", default=["CAM_FRONT"], help="cameras fed to the model")
    p.add_argument("--max-pixels", type=int, default=512 * 512)
    p.add_argument("--image-size", help="fixed resize WxH, e.g. 1596x1596 (3,249 tokens)")
    p.add_argument("--max-new-tokens", type=int, default=320)
    p.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=True,
                   help="grammar-constrained decoding (always a parseable plan)")
    p.add_argument("--forced-tokens", action=argparse.BooleanOptionalAction, default=True,
                   help="with --constrained: feed the tokens the reply format fixes along with "
                        "the free ones (--no-forced-tokens: decode every token step by step)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--attn-implementation", default="sdpa")
    p.add_argument("--no-progress", action="store_true")


def _image_size(text):
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size must be WxH, got {text!r}") from None


def _view_budgets(args: argparse.Namespace) -> tuple[list[str], list[float] | None]:
    """(cameras, view_ratios) from --budgets YAML or from --cameras/--view-ratios."""
    if not args.budgets:
        return list(args.cameras), args.view_ratios
    from fastdrivevla_ros.pipeline.params import load_parameter_file

    if args.view_ratios:
        raise ConfigError("give --view-ratios or --budgets, not both")
    values = load_parameter_file(args.budgets)
    cameras, ratios = values.get("cameras"), values.get("view_ratios")
    if not (isinstance(cameras, list) and isinstance(ratios, list) and ratios):
        raise ConfigError(f"{args.budgets}: needs `cameras` and `view_ratios` lists (as "
                          "`fastdrivevla search-budgets` writes them)")
    return [str(c) for c in cameras], ratios


def run(args: argparse.Namespace) -> int:
    engine = None
    cameras, view_ratios = _view_budgets(args)
    if not args.ground_truth_as_prediction:
        if not args.model:
            raise ConfigError("--model is required (or --ground-truth-as-prediction)")
        from fastdrivevla_ros.vla.engine import DrivingVLA

        engine = DrivingVLA.from_pretrained(
            args.model, dtype=args.dtype, device=args.device,
            attn_implementation=args.attn_implementation, pruner=args.pruner,
            pruner_options={"weights": args.pruner_weights} if args.pruner_weights else None,
            cameras=tuple(cameras), max_pixels=args.max_pixels,
            image_size=_image_size(args.image_size), pruning_ratio=args.pruning_ratio,
            view_ratios=tuple(view_ratios) if view_ratios else None,
            max_new_tokens=args.max_new_tokens, constrained=args.constrained,
            forced_tokens=args.forced_tokens)
    metrics = replay_bag(args.bag, engine, args.out, parse_shard(args.shard), args.limit,
                         gt_as_prediction=args.ground_truth_as_prediction,
                         name=args.convention, baseline=args.baseline,
                         output_bag=args.output_bag, model=args.model or "",
                         on_error=args.on_error,
                         progress=not args.no_progress)
    print(headline(metrics, args.out))
    return 0


def _fmt(d: dict) -> str:
    return "/".join("-" if d.get(k) is None else f"{d[k]:.2f}" for k in ("1s", "2s", "3s", "avg"))


def headline(m: dict, out) -> str:
    """One line for the terminal: sample count and the three metrics at 1s/2s/3s/avg."""
    return (f"{out}: {m['samples']} samples ({m['convention']}), L2 cm {_fmt(m['l2_cm'])}, "
            f"collision % {_fmt(m['collision_pct'])}, intersection % "
            f"{_fmt(m['intersection_pct'])}, parse failures {m['parse_failed']}")
