#!/usr/bin/env python
"""Prefill ms at pruning ratios 0 / 0.25 / 0.5 / 0.75 for the tiny model and the 'small' CPU
preset, with the speedup versus ratio 0 measured side by side in one run (issue 2's benchmark).

A thin wrapper over `fastdrivevla_ros.bench.run_bench`: per preset, one engine, the ratios
visited in interleaved rounds, `random` scoring (near-free, so the prefill change is the
pruning's own). Checkpoints are written with `make_tiny_model` unless given.

    python benchmarks/prefill_ratios.py --out runs/prefill_ratios
    python benchmarks/prefill_ratios.py --small-image-size 1596x1596 --repeats 5   # 3,249 tokens
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def measure(presets: dict[str, str | None], ratios, image_sizes: dict, repeats: int,
            warmup: int, pruner: str, workdir: Path, threads: int | None = None
            ) -> dict[str, dict]:
    """{preset: bench document}; a preset's model dir is built in `workdir` when None."""
    from fastdrivevla_ros.bench import run_bench
    from fastdrivevla_ros.vla.tiny import make_tiny_model

    docs = {}
    for preset, model_dir in presets.items():
        model_dir = model_dir or make_tiny_model(workdir / preset, preset=preset)
        docs[preset] = run_bench(model_dir, pruners=[pruner], ratios=ratios,
                                 image_size=image_sizes.get(preset), repeats=repeats,
                                 warmup=warmup, decode_tokens=1, threads=threads)
    return docs


def table(docs: dict[str, dict]) -> str:
    lines = ["| Preset | Ratio | Visual tokens kept | Prefill ms, median (p25–p75) | Speedup "
             "measured | FLOP bound |", "|---|---:|---:|---:|---:|---:|"]
    for preset, doc in docs.items():
        for r in doc["records"]:
            p = r["ms"]["prefill"]
            lines.append(
                f"| {preset} | {r['ratio']:.2f} | {r['tokens']['visual_kept']} | "
                f"{p['median']:.1f} ({p['p25']:.1f}–{p['p75']:.1f}) | "
                f"×{r['speedup']['prefill']:.2f} | ×{r['flop_bound_speedup']['prefill']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from fastdrivevla_ros.cli.bench import parse_float_list
    from fastdrivevla_ros.cli.settings import parse_size
    from fastdrivevla_ros.bench.report import header_line, write_bench

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny-model", help="tiny checkpoint dir (default: build one)")
    p.add_argument("--small-model", help="small-preset checkpoint dir (default: build one)")
    p.add_argument("--ratios", default="0,0.25,0.5,0.75")
    p.add_argument("--tiny-image-size", help="WxH (default: max_pixels 512*512 -> 336 tokens)")
    p.add_argument("--small-image-size", default="1008x1008",
                   help="WxH for the small preset (1008x1008 -> 1,296 tokens; 1596x1596 -> 3,249)")
    p.add_argument("--pruner", default="random")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch threads (1 = steadiest on a busy machine)")
    p.add_argument("--out", help="also write each preset's bench.json/bench.md here")
    args = p.parse_args(argv)
    sizes = {"tiny": parse_size(args.tiny_image_size),
             "small": parse_size(args.small_image_size)}
    with tempfile.TemporaryDirectory(prefix="prefill-ratios-") as tmp:
        docs = measure({"tiny": args.tiny_model, "small": args.small_model},
                       parse_float_list(args.ratios, "--ratios"), sizes, args.repeats,
                       args.warmup, args.pruner, Path(tmp), args.threads)
    for preset, doc in docs.items():
        print(f"{preset}: {header_line(doc['header'])}")
        if args.out:
            write_bench(doc, Path(args.out) / preset)
    print(table(docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
