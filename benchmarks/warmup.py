"""First plan of a process vs the next ones, without and with the warm-up (`--warmup N`).

    python benchmarks/warmup.py --model DIR [--views 6] [--plans 3] [--decode-step dynamic]

Each setting runs in its own fresh process (the one-off costs are per process: grammar
compilation for the whole vocabulary, first allocations, a compiled decode step). The process
loads the model, runs `DrivingVLA.warmup(N)` (timed), then plans the same real-size frames
`--plans` times with constrained decoding; the table shows each plan's wall time side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(args) -> None:
    import torch

    from fastdrivevla_ros.bench.measure import synthetic_frames
    from fastdrivevla_ros.bench.runner import cameras_for
    from fastdrivevla_ros.vla.engine import DrivingVLA

    torch.set_num_threads(args.threads)
    cams = cameras_for(args.views)
    engine = DrivingVLA.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                        cameras=cams, constrained=True,
                                        decode_step=args.decode_step)
    warmup_s = engine.warmup(args.child)
    frames = synthetic_frames(cams)
    plans = []
    for _ in range(args.plans):
        t0 = time.perf_counter()
        engine.plan(frames)
        plans.append(time.perf_counter() - t0)
    print(json.dumps({"warmup": args.child, "warmup_s": warmup_s, "plans_s": plans}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--views", type=int, choices=[1, 6], default=6)
    p.add_argument("--plans", type=int, default=3)
    p.add_argument("--warmups", type=int, nargs="+", default=[0, 1])
    p.add_argument("--decode-step", default="dynamic", choices=["dynamic", "static", "compiled"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args)
        return 0
    rows = []
    for n in args.warmups:
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", str(n)],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{args.views} view(s), {args.device} {args.dtype}, {args.threads} thread(s), "
          f"decode_step {args.decode_step}, constrained; one fresh process per row")
    heads = " | ".join(f"plan {i + 1} s" for i in range(args.plans))
    print(f"| warm-up | warm-up s | {heads} | plan 1 / plan 2 |")
    print("|---:|---:|" + "---:|" * args.plans + "---:|")
    for r in rows:
        plans = " | ".join(f"{s:.2f}" for s in r["plans_s"])
        ratio = r["plans_s"][0] / r["plans_s"][1] if len(r["plans_s"]) > 1 else float("nan")
        print(f"| {r['warmup']} | {r['warmup_s']:.2f} | {plans} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
