"""Preprocessing of six 1600x900 camera JPEGs -> model inputs: before issue 19 vs now.

    python benchmarks/preprocess.py --model DIR [--repeats 20] [--threads 1] [--image-size WxH]

Rows, interleaved in one run, torch on --threads threads:
  'before' = the former prepare_inputs: JPEG draft decode, two bicubic resizes (target size,
     then the 28-px grid), transformers' Qwen2VLImageProcessor, then the prompt, one thread;
  'now' = `prepare_inputs`: per view in its own thread, the draft decode, ONE resize and
     rescale/normalise/patchify as torch ops; its image half (prepare_pixels) also alone.
Also printed: how far 'now' is from the independent reference (full decode, the training
pipeline's resize, then transformers' processor with its own resize): token grids and the
mean/max |difference| of pixel_values (normalised units; 1 grey level ~ 0.015) and of the
resized uint8 frames; and the same for 'before'. On a shared machine compare the ratio and the
CPU ms (process time summed over threads: what the work costs, whoever else is running).
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

from fastdrivevla_ros.vla import inputs as vin  # noqa: E402
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


def before(tok, proc, jpegs: dict, max_pixels: int, size, history):
    """prepare_inputs as it was before issue 19 -> (pixel_values, frames): draft decode, two
    bicubic resizes, transformers' processor, then the prompt."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    from fastdrivevla_ros.vla.prompt import build_messages

    frames = []
    for data in jpegs.values():
        img = Image.open(io.BytesIO(data))
        target = vin.target_size(*img.size, max_pixels, size)
        img.draft("RGB", target)
        img = img.convert("RGB")
        if img.size != target:
            img = img.resize(target, Image.BICUBIC)
        h, w = smart_resize(img.size[1], img.size[0], 28, 56 * 56, 12_845_056)
        frames.append(np.asarray(img.resize((w, h), Image.BICUBIC)))
    out = proc(images=[Image.fromarray(a) for a in frames], do_resize=False, return_tensors="pt")
    text = tok.apply_chat_template(build_messages(list(jpegs), history), tokenize=False,
                                   add_generation_prompt=True)
    pieces = text.split(vin.IMAGE_PAD)
    grids = [(f.shape[0] // 28, f.shape[1] // 28) for f in frames]
    text = pieces[0] + "".join(vin.IMAGE_PAD * (r * c) + p for (r, c), p in zip(grids, pieces[1:]))
    tok(text, return_tensors="pt", add_special_tokens=False)
    return out["pixel_values"], frames


def reference(proc, jpegs: dict, max_pixels: int, size) -> tuple[np.ndarray, list]:
    """Independent reference: full decode, the training resize, transformers' processor."""
    geometry = vin.ProcessorGeometry.of(proc)
    low, high = vin.pixel_bounds(geometry, max_pixels, size)
    images = [vin.model_image(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")), max_pixels,
                              size) for b in jpegs.values()]
    out = proc(images=images, return_tensors="pt",
               size={"shortest_edge": low, "longest_edge": high})
    frames = [np.asarray(im.resize((int(g[2]) * 14, int(g[1]) * 14), Image.BICUBIC))
              for im, g in zip(images, out["image_grid_thw"])]
    return out, frames


def diff(a, b) -> str:
    d = (a.float() - b.float()).abs()
    return f"mean {float(d.mean()):.4f}, max {float(d.max()):.3f}"


def frame_diff(xs, ys) -> str:
    d = np.concatenate([np.abs(x.astype(int) - y.astype(int)).ravel() for x, y in zip(xs, ys)])
    return f"mean {d.mean():.2f}, max {d.max()} grey levels"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="checkpoint dir (tokenizer + processor)")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds (default 20)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--max-pixels", type=int, default=512 * 512, help="pre-resize budget")
    p.add_argument("--image-size", help="fixed resize WxH instead of --max-pixels")
    args = p.parse_args()
    import torch
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil)

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    proc = Qwen2VLImageProcessorPil.from_pretrained(args.model)
    size = tuple(int(v) for v in args.image_size.split("x")) if args.image_size else None
    jpegs, source = camera_jpegs()
    history = EgoHistory.stationary()
    geometry = vin.ProcessorGeometry.of(proc)
    cams = list(CAMERAS)

    def new():
        return vin.prepare_inputs(tok, proc, cams, jpegs, history, args.max_pixels, size)

    def new_pixels():
        return vin.prepare_pixels(list(jpegs.values()), cams, args.max_pixels, size, geometry)

    stages = {"before (prepare_inputs)": lambda: before(tok, proc, jpegs, args.max_pixels, size,
                                                        history),
              "now (whole prepare_inputs)": new,
              "  now: image half (6 threads)": new_pixels}
    times = {k: [] for k in stages}
    cpu = {k: [] for k in stages}
    for fn in stages.values():    # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in stages.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((time.process_time() - c0) * 1e3)
    ref, ref_frames = reference(proc, jpegs, args.max_pixels, size)
    now = new()
    old_pv, old_frames = before(tok, proc, jpegs, args.max_pixels, size, history)
    print(f"input: six cameras, {source}; torch threads {args.threads}; "
          f"{args.repeats} interleaved rounds; model grids {now.grids}")
    print("| Preprocess (6 JPEGs -> model inputs) | median ms | min ms | CPU ms (all threads) |")
    print("|---|---:|---:|---:|")
    for name, v in times.items():
        print(f"| {name} | {statistics.median(v):.1f} | {min(v):.1f} | "
              f"{statistics.median(cpu[name]):.1f} |")
    old_ms, new_ms = (statistics.median(times[k]) for k in list(stages)[:2])
    old_cpu, new_cpu = (statistics.median(cpu[k]) for k in list(stages)[:2])
    print(f"now vs before: {old_ms / new_ms:.2f}x faster (median wall), "
          f"{old_cpu / new_cpu:.2f}x less CPU")
    same = torch.equal(now.image_grid_thw, ref["image_grid_thw"])
    print(f"vs transformers' processor on the full decode: grids identical: {same}; "
          f"pixel_values |diff| now: {diff(now.pixel_values, ref['pixel_values'])}, "
          f"before: {diff(old_pv, ref['pixel_values'])} (normalised units)")
    print(f"resized frames vs the reference's: now {frame_diff(now.resized, ref_frames)}; "
          f"before {frame_diff(old_frames, ref_frames)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
