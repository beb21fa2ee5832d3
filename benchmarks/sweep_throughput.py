#!/usr/bin/env python
"""Sweep throughput on Ray vs one serial replay, side by side in one run.

The same work both ways: every (setting, bag) of `--pruners` x `--ratios` (+ none) on the
bags. Serial: one process replays them one after another through ONE engine (the model loaded
once, the pruner and ratio switched, as a worker does), with the torch threads of a plain
`replay` (all cores) and with one thread. Sweep: `eval.sweep.run_sweep` with `--workers`
actors of one thread each on a local Ray started first (its start is reported apart: a cluster
pays it once). Reported: keyframes per second of each (the sweep's with its workers' model
loads), the speed-up over the faster serial run, model loads and tasks per worker process,
and whether both wrote the same records.

    python benchmarks/sweep_throughput.py --scene ../shared/data/nuscenes-scene-0916 \\
        --keyframes 8 --out benchmarks/results/sweep_tiny_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def convert_bags(scene: Path, root: Path, keyframes: int) -> list[Path]:
    """scene-0916 split into two bags of `keyframes` keyframes each."""
    from fastdrivevla_ros.data.nuscenes_bag import convert

    bags = []
    for i in range(2):
        out = root / f"bag{i}"
        convert(scene, "v1.0-mini", out, scenes=["scene-0916"], max_keyframes=keyframes,
                first_keyframe=i * keyframes, progress=False)
        bags.append(out)
    return bags


def serial(task_list, spec, threads: int) -> float:
    """Replay every task in one process (one model load); returns the seconds taken."""
    import torch

    from fastdrivevla_ros.eval.sweep import Worker

    before = torch.get_num_threads()
    worker = Worker(spec, threads)
    assert worker.error is None, worker.error
    t0 = time.perf_counter()
    for task in task_list:
        worker.run(task)
    seconds = time.perf_counter() - t0
    torch.set_num_threads(before)
    return seconds


def records(task_list) -> dict:
    out = {}
    for t in task_list:
        lines = (Path(t.out) / "predictions.jsonl").read_text().splitlines()
        out[(t.setting.name, Path(t.bag).name)] = sorted(
            json.dumps({k: v for k, v in json.loads(line).items() if k != "timings_ms"},
                       sort_keys=True) for line in lines)
    return out


def main() -> None:
    from fastdrivevla_ros.eval.sweep import grid, import_ray, run_sweep, start_ray, SweepSpec, \
        tasks
    from fastdrivevla_ros.vla.settings import DEFAULTS, engine_kwargs
    from fastdrivevla_ros.vla.tiny import make_tiny_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", type=Path, default=Path("../shared/data/nuscenes-scene-0916"))
    p.add_argument("--model", type=Path, help="checkpoint (default: a fresh tiny model)")
    p.add_argument("--keyframes", type=int, default=8, help="keyframes per bag (2 bags)")
    p.add_argument("--pruners", default="fastv,random")
    p.add_argument("--ratios", default="0.5")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-pixels", type=int, default=DEFAULTS["max_pixels"])
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--out", type=Path, help="write sweep_throughput.json here")
    args = p.parse_args()
    import_ray()

    root = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    model = args.model or make_tiny_model(root / "model")
    bags = convert_bags(args.scene, root, args.keyframes)
    values = dict(DEFAULTS, model=str(model), max_pixels=args.max_pixels,
                  max_new_tokens=args.max_new_tokens, constrained=False)
    engine = engine_kwargs(values)
    engine.pop("pruner"), engine.pop("pruner_options")
    spec = SweepSpec(str(model), engine)
    settings = grid(args.pruners.split(","), [float(r) for r in args.ratios.split(",")])
    keyframes = len(settings) * len(bags) * args.keyframes

    runs = {}
    # the one-thread run first: like a fresh worker it pays the first plan's warm-up
    for name, threads in (("serial_1_thread", 1), ("serial_all_threads", os.cpu_count())):
        task_list = tasks(settings, bags, root / name)
        runs[name] = {"seconds": serial(task_list, spec, threads), "threads": threads}
    want = records(tasks(settings, bags, root / "serial_1_thread"))
    task_list = tasks(settings, bags, root / "sweep")
    t0 = time.perf_counter()
    ray, _ = start_ray(None, args.workers)
    ray_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = run_sweep(task_list, spec, workers=args.workers, threads=1, progress=False)
    runs["sweep"] = {"seconds": time.perf_counter() - t0, "workers": args.workers,
                     "ray_start_s": round(ray_start, 2),
                     "workers_start_and_load_s": round(state.start_s, 2),
                     "tasks_s": round(state.run_s, 2),
                     "keyframes_per_s_once_loaded": round(keyframes / state.run_s, 3),
                     "worker_processes": len(state.workers),
                     "model_loads_per_worker": [w["loads"] for w in state.workers.values()],
                     "tasks_per_worker": [w["tasks"] for w in state.workers.values()],
                     "same_records_as_serial": records(task_list) == want}
    ray.shutdown()
    for r in runs.values():
        r["keyframes_per_s"] = round(keyframes / r["seconds"], 3)
        r["seconds"] = round(r["seconds"], 2)
    best = max(runs["serial_all_threads"]["keyframes_per_s"],
               runs["serial_1_thread"]["keyframes_per_s"])
    doc = {"keyframes": keyframes, "settings": [s.name for s in settings],
           "bags": len(bags), "model": "tiny" if not args.model else str(model),
           "max_pixels": args.max_pixels, "max_new_tokens": args.max_new_tokens, "runs": runs,
           "speedup_vs_best_serial": round(runs["sweep"]["keyframes_per_s"] / best, 2),
           "speedup_once_loaded": round(runs["sweep"]["keyframes_per_s_once_loaded"] / best, 2),
           "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
           "python": platform.python_version()}
    print(json.dumps(doc, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sweep_throughput.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
