"""Preprocessing of six 1600x900 camera JPEGs -> model inputs: full decode vs PIL draft mode.

    python benchmarks/preprocess.py --model DIR [--repeats 20] [--image-size 1596x1596]

Rows: 'full decode' = what a caller holding decoded arrays pays (Image.open + convert, then
`prepare_inputs` on the arrays); 'draft decode' = the JPEG bytes handed to `prepare_inputs`,
which decodes each at a reduced DCT scale (never below the model's target size) before the
resize. Also printed: how much the model input changes (mean/max |difference| of the resized
uint8 images and of the normalised pixel_values).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastdrivevla_ros.vla.inputs import prepare_inputs  # noqa: E402
from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory  # noqa: E402

SCENE = REPO.parent / "shared" / "data" / "nuscenes-scene-0916" / "samples"


def camera_jpegs() -> tuple[dict[str, bytes], str]:
    """One real nuScenes 1600x900 JPEG per camera, or synthetic frames encoded at quality 90."""
    if all((SCENE / c).is_dir() for c in CAMERAS):
        return {c: sorted((SCENE / c).glob("*.jpg"))[0].read_bytes() for c in CAMERAS}, str(SCENE)
    from fastdrivevla_ros.bench.measure import synthetic_frames

    out = {}
    for cam, arr in synthetic_frames(CAMERAS).items():
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        out[cam] = buf.getvalue()
    return out, "synthetic 1600x900, JPEG quality 90"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="checkpoint dir (tokenizer + processor)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--max-pixels", type=int, default=512 * 512)
    p.add_argument("--image-size", help="fixed resize WxH instead of --max-pixels")
    args = p.parse_args()
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil)

    tok = AutoTokenizer.from_pretrained(args.model)
    proc = Qwen2VLImageProcessorPil.from_pretrained(args.model)
    size = tuple(int(v) for v in args.image_size.split("x")) if args.image_size else None
    jpegs, source = camera_jpegs()
    history = EgoHistory.stationary()

    def full():
        arrays = {c: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                  for c, b in jpegs.items()}
        return prepare_inputs(tok, proc, list(CAMERAS), arrays, history, args.max_pixels, size)

    def draft():
        return prepare_inputs(tok, proc, list(CAMERAS), jpegs, history, args.max_pixels, size)

    times = {"full decode": [], "draft decode": []}
    for fn in (full, draft):    # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in (("full decode", full), ("draft decode", draft)):
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    a, b = full(), draft()
    img_diff = np.concatenate([np.abs(x.astype(int) - y.astype(int)).ravel()
                               for x, y in zip(a.resized, b.resized)])
    pix_diff = (a.pixel_values - b.pixel_values).abs()
    print(f"input: six cameras, {source}; model input grids {a.grids}; "
          f"{args.repeats} interleaved rounds")
    print("| Preprocess (6 JPEGs -> model inputs) | median ms | min ms |")
    print("|---|---:|---:|")
    for name, v in times.items():
        print(f"| {name} | {statistics.median(v):.1f} | {min(v):.1f} |")
    full_ms, draft_ms = (statistics.median(times[k]) for k in ("full decode", "draft decode"))
    print(f"speedup (median): {full_ms / draft_ms:.2f}x")
    print(f"resized uint8 |diff|: mean {img_diff.mean():.2f}, max {img_diff.max()} grey levels; "
          f"pixel_values |diff|: mean {float(pix_diff.mean()):.4f}, "
          f"max {float(pix_diff.max()):.3f} (normalised units); same grids: {a.grids == b.grids}; "
          f"same input_ids: {bool((a.input_ids == b.input_ids).all())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
