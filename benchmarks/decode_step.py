"""Decode pass cost: growing KV cache vs pre-allocated StaticCache vs that under torch.compile.

    python benchmarks/decode_step.py --model DIR [--views 6] [--repeats 5] [--device cuda]

One engine, one input, the real constrained reply with forced tokens; rounds interleave the
three `decode_step` settings. Prints decode ms, ms per decode pass and whether the reply
(token ids) equals the dynamic one. The first plan of 'compiled' compiles (warm-up, untimed;
its duration is printed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("dynamic", "static", "compiled")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--views", type=int, choices=[1, 6], default=6)
    p.add_argument("--image-size", help="fixed resize WxH")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch

    from fastdrivevla_ros.bench.measure import synthetic_frames
    from fastdrivevla_ros.bench.runner import cameras_for
    from fastdrivevla_ros.vla.engine import DrivingVLA

    torch.set_num_threads(args.threads)
    cams = cameras_for(args.views)
    size = tuple(int(v) for v in args.image_size.split("x")) if args.image_size else None
    engine = DrivingVLA.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                        cameras=cams, image_size=size, constrained=True)
    frames = synthetic_frames(cams)
    texts, warm = {}, {}
    for mode in MODES:
        engine.configure(decode_step=mode)
        t0 = time.perf_counter()
        texts[mode] = engine.plan(frames).text
        warm[mode] = time.perf_counter() - t0
    decode = {m: [] for m in MODES}
    passes = {}
    for _ in range(args.repeats):
        for mode in MODES:
            engine.configure(decode_step=mode)
            r = engine.plan(frames)
            decode[mode].append(r.timings_ms["decode"])
            passes[mode] = r.decode_passes
            assert r.text == texts[mode]
    print(f"{args.views} view(s), {args.device} {args.dtype}, {args.threads} thread(s), "
          f"{args.repeats} interleaved rounds; torch {torch.__version__}")
    print("| decode_step | first plan s (compile) | decode ms (median) | ms per pass | passes "
          "| same reply as dynamic |")
    print("|---|---:|---:|---:|---:|---|")
    for mode in MODES:
        med = statistics.median(decode[mode])
        print(f"| {mode} | {warm[mode]:.1f} | {med:.1f} | {med / max(1, passes[mode]):.2f} | "
              f"{passes[mode]} | {texts[mode] == texts['dynamic']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
