#!/usr/bin/env python
"""Drive-node throughput without ROS: six synthetic 12 Hz camera streams through the node's own
frame-set worker (drop-oldest slot + stale drop) and planning service.

What runs is the node's code path minus rclpy: `pipeline.params.validate_config` (node
parameters), `pipeline.planner.PlannerService` (decode JPEGs, plan, heatmaps, diagnostics) and
`pipeline.worker.LatestSetWorker` (the slot of size one the synchroniser callback submits to).
Each camera fires at 12 Hz with a fixed offset after the "lidar" tick, like nuScenes
(7-49 ms); a set is complete when its last camera arrives and is stamped with the first model
camera's stamp, as the node does. Reported: achieved plan rate, dropped sets (superseded in the
slot / stale), latency newest-frame stamp -> plan ready, time per plan, and process memory over
time with its trend (a leak shows as a positive slope after warm-up).

    python benchmarks/node_throughput.py --model /tmp/tiny --duration 60 --out runs/node
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CAMERA_HZ = 12.0
#: nuScenes-like firing offsets after the lidar tick (s), CAM_FRONT first in the sweep order
OFFSETS_S = {"CAM_FRONT": 0.025, "CAM_FRONT_RIGHT": 0.041, "CAM_BACK_RIGHT": 0.049,
             "CAM_BACK": 0.007, "CAM_BACK_LEFT": 0.016, "CAM_FRONT_LEFT": 0.033}


@dataclass
class CompressedFrame:
    """The fields of sensor_msgs/CompressedImage the node's decoder reads."""

    format: str
    data: bytes


def jpeg_streams(cameras, variants: int = 3, quality: int = 90) -> dict[str, list[bytes]]:
    """A few distinct 1600x900 JPEGs per camera, encoded once (cameras send JPEG in the bags)."""
    from PIL import Image

    from fastdrivevla_ros.bench.measure import synthetic_frames

    out = {c: [] for c in cameras}
    for v in range(variants):
        for cam, rgb in synthetic_frames(cameras, seed=v).items():
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
            out[cam].append(buf.getvalue())
    return out


class Recorder:
    """Per-plan records and a memory timeline, filled from the worker / sampler threads."""

    def __init__(self, interval_s: float):
        import psutil

        self.process = psutil.Process()
        self.interval_s = interval_s
        self.plans: list[dict] = []
        self.timeline: list[tuple[float, float, int]] = []   # (s since start, RSS MiB, plans)
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="rss-sampler")

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            with self._lock:
                n = len(self.plans)
            self.timeline.append((time.monotonic() - self.t0,
                                  self.process.memory_info().rss / 2**20, n))
            if self._stop.wait(self.interval_s):
                return

    def plan(self, **values) -> None:
        with self._lock:
            self.plans.append(values)


def run_node_throughput(model: str, duration_s: float = 30.0, cameras=None,
                        pruner: str = "none", pruning_ratio: float = 0.5,
                        max_new_tokens: int = 320, constrained: bool = True,
                        publish_heatmaps: bool = True, max_staleness_s: float = 1.0,
                        sample_s: float = 0.25, device: str = "cpu",
                        untrained: bool = False) -> dict:
    """Stream six 12 Hz cameras for `duration_s` through the node's worker; returns a report."""
    from fastdrivevla_ros.pipeline.diagnostics import DriveDiagnostics
    from fastdrivevla_ros.pipeline.params import validate_config
    from fastdrivevla_ros.pipeline.planner import PlannerService
    from fastdrivevla_ros.pipeline.worker import FrameSet, LatestSetWorker
    from fastdrivevla_ros.vla.prompt import CAMERAS

    cameras = tuple(cameras or CAMERAS)
    cfg = validate_config({"model": str(model), "device": device, "cameras": list(cameras),
                           "pruner": pruner, "pruning_ratio": pruning_ratio,
                           "max_new_tokens": max_new_tokens, "constrained": constrained,
                           "publish_heatmaps": publish_heatmaps,
                           "max_staleness_s": max_staleness_s, "untrained": untrained})
    clock = time.monotonic
    diagnostics = DriveDiagnostics(cfg.cameras, cfg.camera_timeout_s)
    service = PlannerService(cfg, diagnostics, clock=clock)
    if not service.load():
        raise RuntimeError(f"model failed to load: {diagnostics.model}")
    streams = jpeg_streams(cameras)
    recorder = Recorder(sample_s)
    newest = {"stamp": None}

    def frame_set(k: int, tick: float) -> FrameSet:
        images = {c: CompressedFrame("jpeg", streams[c][k % len(streams[c])]) for c in cameras}
        stamps = {c: int((tick + OFFSETS_S[c]) * 1e9) for c in cameras}
        return FrameSet(stamp=stamps[cameras[0]] * 1e-9, images=images, stamps_ns=stamps,
                        received=clock())

    def process(frame: FrameSet) -> None:
        start = clock()
        out = service.plan(frame)
        done = clock()
        if out is None:
            raise RuntimeError(f"plan failed: {diagnostics.last_fault}")
        recorder.plan(t=done - recorder.t0, stamp=frame.stamp,
                      latency_ms=(done - frame.stamp) * 1e3,
                      wait_ms=(start - frame.received) * 1e3, process_ms=(done - start) * 1e3,
                      engine_ms=out.result.timings_ms.get("total", 0.0),
                      newest_age_ms=(done - newest["stamp"]) * 1e3, status=out.result.status)

    # warm-up outside the measurement: first-call costs (grammar compile, allocator growth)
    for k in range(2):
        service.plan(frame_set(k, clock()))
    worker = LatestSetWorker(process, cfg.max_staleness_s, clock=clock)
    recorder.start()
    start = clock()
    period, last_offset = 1.0 / CAMERA_HZ, max(OFFSETS_S[c] for c in cameras)
    k = 0
    while True:
        tick = start + k * period
        complete = tick + last_offset          # the set is complete when its last camera fires
        if complete - start > duration_s:
            break
        time.sleep(max(0.0, complete - clock()))
        item = frame_set(k, tick)
        newest["stamp"] = item.stamp
        for cam in cameras:
            diagnostics.camera_message(cam, clock())
        diagnostics.set_received(clock())
        worker.submit(item)
        k += 1
    elapsed = clock() - start
    worker.wait_idle(timeout=120)
    worker.close()
    recorder.stop()
    report = _report(cfg, recorder, worker.stats(), k, elapsed, duration_s)
    report["last_set_stamp"] = newest["stamp"]
    return report


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _memory_trend(timeline, skip_s: float) -> dict:
    """RSS at start/end/max after `skip_s` and the least-squares slope (MiB per minute)."""
    pts = [(t, m) for t, m, _ in timeline if t >= skip_s]
    if len(pts) < 3:
        return {"samples": len(pts)}
    t, m = np.array(pts).T
    slope = float(np.polyfit(t, m, 1)[0]) * 60.0
    third = max(1, len(m) // 3)
    return {"samples": len(pts), "start_mib": float(m[0]), "end_mib": float(m[-1]),
            "max_mib": float(m.max()), "first_third_median_mib": float(np.median(m[:third])),
            "last_third_median_mib": float(np.median(m[-third:])),
            "slope_mib_per_min": slope}


def _report(cfg, recorder: Recorder, stats, submitted: int, elapsed: float,
            duration_s: float) -> dict:
    plans = recorder.plans
    lat = [p["latency_ms"] for p in plans]
    proc = [p["process_ms"] for p in plans]
    return {
        "settings": {"model": cfg.model, "cameras": list(cfg.cameras), "camera_hz": CAMERA_HZ,
                     "duration_s": duration_s, "pruner": cfg.pruner,
                     "pruning_ratio": cfg.pruning_ratio, "max_new_tokens": cfg.max_new_tokens,
                     "constrained": cfg.constrained, "publish_heatmaps": cfg.publish_heatmaps,
                     "max_staleness_s": cfg.max_staleness_s},
        "sets_submitted": submitted, "set_rate_hz": submitted / elapsed,
        "plans": len(plans), "plan_rate_hz": len(plans) / elapsed,
        "dropped": {"superseded": stats.superseded, "stale": stats.stale,
                    "failed": stats.failed, "discarded_on_close": stats.discarded_on_close},
        "parse_failed": sum(p["status"] != "ok" for p in plans),
        "latency_ms": {"median": _pct(lat, 50), "p95": _pct(lat, 95),
                       "max": max(lat) if lat else None},
        "process_ms": {"median": _pct(proc, 50), "p95": _pct(proc, 95)},
        "engine_ms_median": statistics.median([p["engine_ms"] for p in plans]) if plans else None,
        "wait_ms_median": _pct([p["wait_ms"] for p in plans], 50),
        "newest_age_at_plan_ms_median": _pct([p["newest_age_ms"] for p in plans], 50),
        "memory": _memory_trend(recorder.timeline, skip_s=min(10.0, duration_s / 4)),
        "timeline": [{"t": t, "rss_mib": m, "plans": n} for t, m, n in recorder.timeline],
        "plan_times": [{"t": p["t"], "stamp": p["stamp"], "latency_ms": p["latency_ms"]}
                       for p in plans],
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    tl = report["timeline"]
    a.plot([p["t"] for p in tl], [p["rss_mib"] for p in tl])
    a.set(ylabel="RSS (MiB)", title=f"Node throughput: {report['plan_rate_hz']:.2f} plans/s "
          f"from {report['set_rate_hz']:.1f} sets/s")
    pts = report["plan_times"]
    b.plot([p["t"] for p in pts], [p["latency_ms"] for p in pts], ".")
    b.set(xlabel="time (s)", ylabel="stamp → plan (ms)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(report: dict) -> str:
    m, d = report["memory"], report["dropped"]
    lines = [
        f"sets submitted: {report['sets_submitted']} ({report['set_rate_hz']:.2f} Hz)",
        f"plans: {report['plans']} ({report['plan_rate_hz']:.2f} Hz), "
        f"parse failed {report['parse_failed']}",
        f"dropped: superseded {d['superseded']}, stale {d['stale']}, failed {d['failed']}",
        f"latency newest frame stamp -> plan (ms): median {report['latency_ms']['median']:.0f}, "
        f"p95 {report['latency_ms']['p95']:.0f}, max {report['latency_ms']['max']:.0f}",
        f"time per plan (ms): median {report['process_ms']['median']:.0f} "
        f"(engine {report['engine_ms_median']:.0f})",
        f"age of the newest set when a plan is ready (ms): median "
        f"{report['newest_age_at_plan_ms_median']:.0f}",
    ]
    if "slope_mib_per_min" in m:
        lines.append(f"memory after warm-up: {m['start_mib']:.0f} -> {m['end_mib']:.0f} MiB "
                     f"(max {m['max_mib']:.0f}), trend {m['slope_mib_per_min']:+.2f} MiB/min")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint dir (e.g. make-tiny-model output)")
    p.add_argument("--duration", type=float, default=30.0, help="streaming time (s)")
    p.add_argument("--views", type=int, choices=[1, 6], default=6)
    p.add_argument("--pruner", default="none")
    p.add_argument("--untrained", action="store_true",
                   help="a learned pruner (recon) without weights (node parameter untrained)")
    p.add_argument("--pruning-ratio", type=float, default=0.5)
    p.add_argument("--max-new-tokens", type=int, default=320)
    p.add_argument("--no-constrained", action="store_true")
    p.add_argument("--no-heatmaps", action="store_true")
    p.add_argument("--max-staleness", type=float, default=1.0, help="node max_staleness_s")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch intra-op threads (1 on a busy machine)")
    p.add_argument("--out", help="write node_throughput.json and .png here")
    args = p.parse_args(argv)
    from fastdrivevla_ros.vla.prompt import CAMERAS

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run_node_throughput(
        args.model, args.duration, CAMERAS[:args.views], args.pruner, args.pruning_ratio,
        args.max_new_tokens, not args.no_constrained, not args.no_heatmaps, args.max_staleness,
        device=args.device, untrained=args.untrained)
    print(summary(report))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "node_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
        plot(report, out / "node_throughput.png")
        print(f"wrote {out / 'node_throughput.json'}, {out / 'node_throughput.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
