"""Scaling curve: unpruned prefill time and FLOPs vs number of visual tokens.

Shows where attention's quadratic term starts to matter: prefill FLOPs are
linear (2 * params * L) + attention (4 * L^2 * D per layer), so the attention share of the
measured FLOPs, and the gap between measured time and a linear extrapolation from the smallest
point, grow with L.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from fastdrivevla_ros.bench.measure import MemoryProbe, Spread, synthetic_frames
from fastdrivevla_ros.bench.runner import (SCHEMA_VERSION, _check_counts, _load_average, _now,
                                           cameras_for, count_stage_flops, environment,
                                           fixed_decode_length, parse_device, timed_plan)
from fastdrivevla_ros.errors import ConfigError


@dataclass(frozen=True)
class ScalingPoint:
    """views cameras, each resized to image_size (w, h) -> views * (h/28) * (w/28) tokens."""

    views: int
    image_size: tuple[int, int]

    @property
    def label(self) -> str:
        w, h = self.image_size
        return f"{self.views}x{w}x{h}"

    @classmethod
    def parse(cls, text: str) -> "ScalingPoint":
        """'VIEWS:WxH', e.g. '1:1596x1596' (3,249 tokens) or '6:672x392' (6 x 336)."""
        try:
            views, size = text.split(":")
            w, h = (int(v) for v in size.lower().split("x"))
            point = cls(int(views), (w, h))
        except ValueError as e:
            raise ConfigError(f"scaling point must be VIEWS:WxH (e.g. 1:1596x1596), got "
                              f"{text!r}") from e
        if not 1 <= point.views <= 6 or min(w, h) < 28:
            raise ConfigError(f"scaling point {text!r}: 1 to 6 views of at least 28x28 px")
        return point


#: 336 (Impromptu's 672x392) -> 1,296 -> 6 views x 336 = 2,016 -> 3,249 (FastDriveVLA's 1596^2)
DEFAULT_POINTS = tuple(ScalingPoint.parse(p) for p in
                       ("1:672x392", "1:1008x1008", "6:672x392", "1:1596x1596"))


def run_scaling(model_dir, points=DEFAULT_POINTS, repeats: int = 3, warmup: int = 1,
                device: str = "cpu", dtype: str = "float32", attn_implementation: str = "sdpa",
                threads: int | None = None, progress: bool = True) -> dict:
    """Unpruned prefill ms and FLOPs at each point; returns the scaling.json document."""
    from fastdrivevla_ros.vla.engine import DrivingVLA

    _check_counts(repeats, warmup, 1)
    points = [p if isinstance(p, ScalingPoint) else ScalingPoint.parse(p) for p in points]
    if not points:
        raise ConfigError("no scaling points given")
    dev = parse_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    engine = DrivingVLA.from_pretrained(model_dir, dtype=dtype, device=str(dev),
                                        attn_implementation=attn_implementation,
                                        max_new_tokens=1, constrained=False)
    frames = synthetic_frames(cameras_for(6))
    load_start = _load_average()
    flops, lengths, samples = {}, {}, {p: [] for p in points}
    with fixed_decode_length(engine), MemoryProbe(dev) as probe:
        for p in tqdm(points, desc="FLOPs + warm-up", disable=not progress):
            _configure(engine, p)
            flops[p] = count_stage_flops(engine, frames)
            lengths[p] = int(engine.prepare(frames).input_ids.shape[1])
            for _ in range(warmup):
                engine.plan(frames)
        for _ in tqdm(range(repeats), desc="timed rounds", disable=not progress):
            for p in points:
                _configure(engine, p)
                samples[p].append(timed_plan(engine, frames, probe))
    rows = [_row(p, flops[p], lengths[p], samples[p]) for p in points]
    rows.sort(key=lambda r: r["tokens"]["visual"])
    _add_linear_reference(rows)
    header = environment(engine, dev, dtype, attn_implementation)
    header.update(schema_version=SCHEMA_VERSION, kind="scaling", created=_now(),
                  settings={"model_dir": str(model_dir), "repeats": repeats, "warmup": warmup,
                            "points": [p.label for p in points]},
                  load_average={"start": load_start, "end": _load_average()})
    return {"header": header, "points": rows}


def _configure(engine, point: ScalingPoint) -> None:
    engine.configure(cameras=cameras_for(point.views), image_size=point.image_size,
                     pruning_ratio=0.0)


def _row(point: ScalingPoint, flops_and_result, prefill_tokens: int, samples) -> dict:
    flops, result = flops_and_result
    ms = {s: Spread.of([x.ms[s] for x in samples]).as_dict() for s in ("vision", "prefill")}
    cpu_ms = None
    if samples[0].cpu_ms is not None:
        cpu_ms = {s: Spread.of([x.cpu_ms[s] for x in samples]).as_dict()
                  for s in ("vision", "prefill")}
    attn = flops["prefill_attention"]
    return {
        "label": point.label, "views": point.views, "image_size": list(point.image_size),
        "tokens": {"visual": result.tokens_total, "prefill": prefill_tokens},
        "flops": {"vision": flops["vision"], "prefill": flops["prefill"],
                  "prefill_attention": attn, "prefill_linear": flops["prefill"] - attn},
        "attention_share": attn / flops["prefill"] if flops["prefill"] else None,
        "ms": ms,
        "cpu_ms": cpu_ms,
        "peak_memory_mib": Spread.of([x.peak_mib for x in samples]).as_dict(),
    }


def _add_linear_reference(rows: list[dict]) -> None:
    """What prefill would cost if it scaled linearly in sequence length (text + visual tokens)
    from the smallest point; `superlinearity` = measured / linear (1 = linear, > 1 = the
    quadratic term shows)."""
    first = rows[0]
    for r in rows:
        scale = r["tokens"]["prefill"] / first["tokens"]["prefill"]
        for key, measured, ref in (("ms", r["ms"]["prefill"]["median"],
                                    first["ms"]["prefill"]["median"]),
                                   ("flops", r["flops"]["prefill"], first["flops"]["prefill"])):
            r.setdefault("superlinearity", {})[key] = measured / (ref * scale) if ref else None
