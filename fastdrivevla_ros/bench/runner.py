"""Efficiency benchmark: every pruner x pruning ratio, side by side in one run (paper Table 4).

Method (written into every bench.json header as `notes`):
  * one model, one engine, one fixed input; ratio 0 is measured ONCE as the unpruned baseline
    (at ratio 0 the engine never calls a pruner, so every pruner's ratio 0 is that same run);
  * decode produces the REAL reply: constrained to the planning format, full length, with
    forced tokens unless turned off; `num_generated` (tokens emitted) and `decode_passes`
    (forward passes after the prefill) are reported. `decode_tokens=N` instead runs exactly N
    greedy steps with stop tokens and grammar off (a fixed-length cost probe);
  * the whole-plan table (`plans`, bench/plans.py): transformers `generate` vs our step-by-step,
    forced-token and forced + pruned decoding, side by side;
  * FLOPs: one extra, untimed plan per configuration under torch's FlopCounterMode, attributed
    to stages by wrapping the engine's `encode_images` / `prefill` / `decode` and the pruner's
    `select` on the instances (no engine changes);
  * wall clock: the engine's own per-stage stopwatch (synchronised on CUDA) plus the whole
    `plan` call (CUDA events on GPU); warm-up runs first, then `repeats` rounds that visit
    every configuration in turn (interleaved, so drift and background load hit all alike);
  * CPU time (CPU devices): process CPU seconds per stage through the same wrappers; unlike
    wall clock it does not grow when other processes share the cores (use 1 torch thread);
  * memory: peak CUDA allocation, or sampled process RSS on CPU, per timed plan.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from fastdrivevla_ros.bench.measure import (MemoryProbe, NestedStages, Spread, StageFlops,
                                            WallTimer, cpu_stages, synthetic_frames,
                                            wrapped_methods)
from fastdrivevla_ros.errors import ConfigError, MissingInputError
from fastdrivevla_ros.pruning.base import Pruner
from fastdrivevla_ros.vla.prompt import CAMERAS
from fastdrivevla_ros.vla.settings import DEFAULTS

SCHEMA_VERSION = 1
DEFAULT_RATIOS = (0.0, 0.25, 0.5, 0.75)
#: wrapped method -> stage credited (engine's encode_images / prefill / decode, pruner's select)
METHOD_STAGES = {"encode_images": "vision", "prefill": "prefill", "decode": "decode",
                 "select": "pruner"}
#: stages whose wall clock is reported (engine stopwatch names + "plan" + per-token decode)
TIMED_STAGES = ("preprocess", "vision", "scoring", "prefill", "decode", "decode_per_token",
                "plan")
#: stages whose process CPU time is reported on CPU devices
CPU_STAGES = ("vision", "scoring", "prefill", "decode", "decode_per_token", "plan")
NOTES = [
    "ratio 0 is measured once as the unpruned baseline; at ratio 0 the engine calls no pruner",
    "decode produces the real constrained reply (num_generated tokens, decode_passes passes "
    "after the prefill); with settings.decode_tokens set, exactly that many greedy steps with "
    "stop tokens and grammar off instead",
    "plans: whole plan per decoding mode; the transformers generate row emits as many tokens as "
    "the step-by-step row (unconstrained, stop tokens off), preprocessing included in plan ms",
    "FLOPs from torch.utils.flop_counter.FlopCounterMode in a separate untimed plan; attention "
    "FLOPs count the full L x L score matrix (causal masking is not discounted)",
    "flops.total and flops.total_without_vision include the pruner and all decode steps; the "
    "paper leaves the vision encoder out; flops.pruner_in_vision is what a pruner's vision hooks "
    "add to the vision stage (kept in total_without_vision)",
    "ms.prefill is the LLM layers + head only; ms.scoring is the pruner (FastV-style pruners "
    "score between layers, so prefill also holds their full-length early layers)",
    "timed rounds visit every configuration in turn (interleaved); spread over rounds",
    "cpu_ms: process CPU time per stage (CPU devices only); robust to other load when torch "
    "runs 1 thread, inflated by OpenMP spin-waits with more threads on a busy machine",
    "CPU memory is sampled process RSS (model included, allocator caching included)",
]


@dataclass
class _Config:
    """One measured configuration."""

    pruner_name: str
    ratio: float
    pruner: Pruner
    options: dict


# ---------------------------------------------------------------------------------- helpers
def parse_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"bad device {device!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu or cuda[:N], got {device!r}")
    return dev


def cameras_for(views: int) -> tuple[str, ...]:
    if views == 1:
        return ("CAM_FRONT",)
    if views == 6:
        return tuple(CAMERAS)
    raise ConfigError(f"views must be 1 (CAM_FRONT, Impromptu-VLA) or 6 (all cameras), got {views}")


def _check_counts(repeats: int, warmup: int, decode_tokens: int | None) -> None:
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}")
    if decode_tokens is not None and not 1 <= decode_tokens <= 4096:
        raise ConfigError(f"decode_tokens must be in [1, 4096], got {decode_tokens}")


@contextmanager
def fixed_decode_length(engine):
    """Disable stop tokens (and constraints) so decode always runs max_new_tokens steps."""
    saved = engine.stop_ids, engine.settings.constrained
    engine.stop_ids = []
    engine.configure(constrained=False)
    try:
        yield engine
    finally:
        engine.stop_ids = saved[0]
        engine.configure(constrained=saved[1])


@contextmanager
def _use(engine, cfg: _Config):
    """Switch the engine to one configuration (pruner instance + ratio) for a block."""
    engine.pruner = cfg.pruner
    engine.configure(pruning_ratio=cfg.ratio)
    yield engine


@contextmanager
def staged(engine, meter: NestedStages):
    """Credit the engine's stages and the pruner's `select` ("pruner") to `meter` while the
    block runs: wrappers on the two instances, no engine change."""
    def wrapper(name, fn):
        def inner(*args, **kwargs):
            with meter.stage(METHOD_STAGES[name]):
                return fn(*args, **kwargs)
        return inner

    with wrapped_methods(engine, ("encode_images", "prefill", "decode"), wrapper), \
            wrapped_methods(engine.pruner, ("select",), wrapper):
        yield meter


def count_stage_flops(engine, frames: dict) -> tuple[dict, object]:
    """FLOPs of one plan split by stage. Returns (flops dict, PlanResult).

    flops keys: vision, pruner, prefill, prefill_attention, decode, decode_per_token, other
    (everything outside the wrapped stages), total, total_without_vision.
    """
    with StageFlops() as counter, staged(engine, counter):
        result = engine.plan(frames)
    own = {s: counter.total(s) for s in ("vision", "pruner", "prefill", "decode")}
    total = counter.total()
    steps = max(1, result.num_generated)
    return {**own, "prefill_attention": counter.attention("prefill"),
            "decode_per_token": own["decode"] / steps,
            "other": total - sum(own.values()), "total": total,
            "total_without_vision": total - own["vision"]}, result


@dataclass
class Sample:
    """One timed plan. ms: wall clock per stage (the engine's stopwatch) + 'decode_per_token'
    + 'plan' (whole call); cpu_ms: process CPU time for the same stages (None on CUDA, where
    the work is asynchronous); peak_mib: memory peak during the plan."""

    ms: dict[str, float]
    cpu_ms: dict[str, float] | None
    peak_mib: float
    result: object


def timed_plan(engine, frames: dict, probe: MemoryProbe) -> Sample:
    """One timed plan: wall and CPU ms per stage, and the memory peak."""
    timer = WallTimer(engine.device)
    cpu = None if timer.cuda else cpu_stages()
    with probe.window() as peak, (staged(engine, cpu) if cpu else nullcontext()):
        c0 = time.process_time()
        with timer():
            result = engine.plan(frames)
        cpu_plan_ms = (time.process_time() - c0) * 1e3
    steps = max(1, result.num_generated)
    # the engine's stopwatch has no "scoring" entry when nothing was pruned
    ms = {s: float(result.timings_ms.get(s, 0.0))
          for s in ("preprocess", "vision", "scoring", "prefill", "decode")}
    ms.update(decode_per_token=ms["decode"] / steps, plan=timer.ms)
    cpu_ms = None
    if cpu is not None:
        cpu_ms = {stage: cpu.own(meter) * 1e3 for stage, meter in
                  (("vision", "vision"), ("scoring", "pruner"), ("prefill", "prefill"),
                   ("decode", "decode"))}
        cpu_ms.update(decode_per_token=cpu_ms["decode"] / steps, plan=cpu_plan_ms)
    return Sample(ms, cpu_ms, peak[0], result)


def _ratio(a: float, b: float) -> float | None:
    return float(a) / float(b) if b and b > 0 else None


# ---------------------------------------------------------------------------------- environment
def environment(engine, device: torch.device, dtype: str, attn: str) -> dict:
    import numpy
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "device": {"type": device.type, "name": name, "torch_threads": torch.get_num_threads(),
                   "interop_threads": torch.get_num_interop_threads(),
                   "cpu_count": os.cpu_count()},
        "dtype": dtype, "attn_implementation": attn,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": numpy.__version__,
                     "fastdrivevla_ros": _package_version(),
                     "cuda": torch.version.cuda if device.type == "cuda" else None},
        "platform": platform.platform(),
        "model": model_summary(engine.model),
    }


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fastdrivevla_ros")
    except PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def model_summary(model) -> dict:
    """Architecture numbers a reader needs to check the FLOPs by hand."""
    tc, vc = model.config.text_config, model.config.vision_config
    lm = model.model.language_model

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {
        "text": {"hidden_size": tc.hidden_size, "num_hidden_layers": tc.num_hidden_layers,
                 "num_attention_heads": tc.num_attention_heads,
                 "num_key_value_heads": tc.num_key_value_heads,
                 "intermediate_size": tc.intermediate_size, "vocab_size": tc.vocab_size},
        "vision": {"depth": vc.depth, "hidden_size": vc.hidden_size, "num_heads": vc.num_heads,
                   "out_hidden_size": vc.out_hidden_size},
        "params": {"llm_layers": count(lm.layers), "embed_tokens": count(lm.embed_tokens),
                   "lm_head": count(model.lm_head), "vision": count(model.model.visual),
                   "total": count(model)},
    }


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------- configs
def _build_configs(pruners: list[str], ratios: list[float], options: dict,
                   skipped: list[dict]) -> list[_Config]:
    """Baseline first, then each pruner that builds at each nonzero ratio; the rest skipped."""
    from fastdrivevla_ros.pruning.registry import available_pruners, build_pruner

    configs = [_Config("none", 0.0, build_pruner("none"), {})]
    known = available_pruners()
    for name in pruners:
        if name == "none":
            continue
        if name not in known:
            raise ConfigError(f"unknown pruner {name!r}; available: {', '.join(known)}")
        pruner, used = _build_for_timing(name, options.get(name))   # errors stop the bench
        if pruner.keeps_all:
            continue   # keeps everything: the baseline already measures it
        configs += [_Config(name, r, pruner, used) for r in ratios if r > 0]
    return configs


def _build_for_timing(name: str, options: dict | None) -> tuple[Pruner, dict]:
    """Build with the user's options; without any, a pruner that needs trained weights but
    offers `untrained=True` (recon) is built untrained: same architecture, so the same FLOPs
    and time as trained weights (its selections are meaningless, which timing ignores)."""
    import inspect

    from fastdrivevla_ros.pruning.registry import build_pruner, pruner_class

    try:
        return build_pruner(name, **(options or {})), dict(options or {})
    except ConfigError:
        params = inspect.signature(pruner_class(name).__init__).parameters
        if options or "untrained" not in params:
            raise
        return build_pruner(name, untrained=True), {"untrained": True}


def _probe_flops(engine, frames, configs, skipped, progress) -> dict[int, tuple[dict, object]]:
    """FLOP run per configuration. Only a pruner that needs side data the bench does not have
    (mask_oracle's foreground masks: MissingInputError) is skipped, with why; any other error
    (an invalid selection included) is a bug and stops the bench."""
    out, dead = {}, set()
    for i, cfg in enumerate(tqdm(configs, desc="FLOPs", disable=not progress)):
        if cfg.pruner_name in dead:
            continue
        cfg.pruner.reset()
        try:
            with _use(engine, cfg):
                out[i] = count_stage_flops(engine, frames)
        except MissingInputError as e:
            dead.add(cfg.pruner_name)
            reason = f"cannot run on this input: {type(e).__name__}: {e}"
            skipped.append({"pruner": cfg.pruner_name, "reason": reason})
            print(f"bench: skipping {cfg.pruner_name}: {reason}", file=sys.stderr)
    return {i: v for i, v in out.items() if configs[i].pruner_name not in dead}


def check_bench(pruners: list[str] | None, ratios, pruner_options: dict | None = None,
                plan_pruner: str | None = None, plan_ratios=(), repeats: int = 5,
                warmup: int = 1, decode_tokens: int | None = None,
                threads: int | None = None) -> None:
    """Every argument of run_bench that does not need the model, checked (each pruner built
    with its options) so a mistake costs a second, not a benchmark."""
    from fastdrivevla_ros.pruning.registry import available_pruners, pruner_class

    _check_counts(repeats, warmup, decode_tokens)
    for what, values in (("ratios", ratios), ("plan ratios", plan_ratios)):
        if any(not 0.0 <= float(r) < 1.0 for r in values):
            raise ConfigError(f"{what} must be in [0, 1), got {list(values)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    names = list(available_pruners() if pruners is None else pruners)
    for name in [*(pruner_options or {}), *names, *([plan_pruner] if plan_pruner else [])]:
        pruner_class(name)                          # unknown names, options of unknown pruners
    for name in dict.fromkeys([*names, *([plan_pruner] if plan_pruner else [])]):
        _build_for_timing(name, (pruner_options or {}).get(name))


# ---------------------------------------------------------------------------------- run_bench
def run_bench(model_dir, pruners: list[str] | None = None, ratios=DEFAULT_RATIOS,
              views: int = 1, max_pixels: int = DEFAULTS["max_pixels"],
              image_size: tuple[int, int] | None = None, repeats: int = 5, warmup: int = 1,
              decode_tokens: int | None = None, device: str = "cpu", dtype: str = "float32",
              attn_implementation: str = "sdpa", pruner_options: dict | None = None,
              threads: int | None = None, frames: dict | None = None,
              progress: bool = True, max_new_tokens: int = 320, forced_tokens: bool = True,
              plan_pruner: str | None = "recon", plan_ratios=(0.5, 0.75), plan_drafts=(),
              decode_step: str = "dynamic") -> dict:
    """Benchmark `pruners` x `ratios` on one model; returns the bench.json document.

    pruners: names from the registry (None = all available); ratio 0 is the shared baseline.
    views: 1 (CAM_FRONT) or 6; max_pixels / image_size (w, h) as in PlannerSettings.
    frames: {camera: HxWx3 uint8} to use instead of synthetic 1600x900 frames.
    pruner_options: {pruner name: constructor kwargs} (e.g. {'recon': {'weights': DIR}}).
    decode_tokens: None = decode the real constrained reply (up to max_new_tokens, with
    forced_tokens as given); N = exactly N greedy steps, stop tokens and grammar off.
    plan_pruner: pruner of the whole-plan table's pruned rows at plan_ratios (None: no table;
    there is none in the fixed-length mode either); plan_drafts: draft kinds (oracle, wrong)
    repeating its forced-tokens rows (bench/plans.py).
    """
    from fastdrivevla_ros.pruning.registry import available_pruners
    from fastdrivevla_ros.vla.engine import DrivingVLA

    check_bench(pruners, ratios, pruner_options, plan_pruner if decode_tokens is None else None,
                plan_ratios, repeats, warmup, decode_tokens, threads)
    ratios = sorted({float(r) for r in ratios} | {0.0})
    dev = parse_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    cameras = cameras_for(views)
    pruners = list(available_pruners() if pruners is None else pruners)
    load_start = _load_average()
    engine = DrivingVLA.from_pretrained(
        model_dir, dtype=dtype, device=str(dev), attn_implementation=attn_implementation,
        cameras=cameras, max_pixels=max_pixels, image_size=image_size,
        max_new_tokens=decode_tokens or max_new_tokens, constrained=decode_tokens is None,
        forced_tokens=forced_tokens, decode_step=decode_step)
    source = "synthetic 1600x900" if frames is None else "given"
    frames = frames if frames is not None else synthetic_frames(cameras)
    skipped: list[dict] = []
    configs = _build_configs(pruners, ratios, pruner_options or {}, skipped)

    fixed = fixed_decode_length(engine) if decode_tokens else nullcontext()
    with fixed, MemoryProbe(dev) as probe:
        baseline_mib = probe.rss_mib() if dev.type == "cpu" else (
            torch.cuda.memory_allocated(dev) / 2**20)
        flops = _probe_flops(engine, frames, configs, skipped, progress)
        live = sorted(flops)
        for i in tqdm(live, desc="warm-up", disable=not progress or warmup == 0):
            with _use(engine, configs[i]):
                for _ in range(warmup):
                    engine.plan(frames)
        samples = {i: [] for i in live}
        for _ in tqdm(range(repeats), desc="timed rounds", disable=not progress):
            for i in live:
                with _use(engine, configs[i]):
                    samples[i].append(timed_plan(engine, frames, probe))
    plans = []
    if plan_pruner and decode_tokens is None:
        from fastdrivevla_ros.bench.plans import run_plan_modes

        pruner, _ = _build_for_timing(plan_pruner, (pruner_options or {}).get(plan_pruner))
        plans = run_plan_modes(engine, frames, pruner, plan_ratios, repeats, warmup, progress,
                               plan_drafts)

    inputs = engine.prepare(frames)
    records = [_record(configs[i], flops[i], samples[i], inputs) for i in live]
    _add_speedups(records)
    header = environment(engine, dev, dtype, attn_implementation)
    header.update(
        schema_version=SCHEMA_VERSION, kind="bench", created=_now(),
        settings={"model_dir": str(model_dir), "views": views, "cameras": list(cameras),
                  "max_pixels": max_pixels, "image_size": list(image_size) if image_size else None,
                  "grids": [list(g) for g in inputs.grids], "decode_tokens": decode_tokens,
                  "max_new_tokens": max_new_tokens, "forced_tokens": forced_tokens,
                  "constrained": decode_tokens is None, "plan_pruner": plan_pruner,
                  "plan_ratios": list(plan_ratios), "plan_drafts": list(plan_drafts),
                  "decode_step": decode_step,
                  "repeats": repeats, "warmup": warmup, "ratios": ratios,
                  "pruners": pruners, "input": source},
        load_average={"start": load_start, "end": _load_average()},
        memory={"baseline_mib": baseline_mib, "process_max_rss_mib": _max_rss_mib()},
        skipped=skipped, notes=NOTES)
    return {"header": header, "records": records, "plans": plans}


def _max_rss_mib() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
    except (ImportError, OSError):
        return None


def _record(cfg: _Config, flops_and_result, samples, inputs) -> dict:
    flops, result = flops_and_result
    text_tokens = int(inputs.input_ids.shape[1]) - result.tokens_total
    ms = {s: Spread.of([x.ms[s] for x in samples]).as_dict() for s in TIMED_STAGES}
    cpu_ms = None
    if samples[0].cpu_ms is not None:
        cpu_ms = {s: Spread.of([x.cpu_ms[s] for x in samples]).as_dict() for s in CPU_STAGES}
    last = samples[-1].result
    return {
        "pruner": cfg.pruner_name, "ratio": cfg.ratio, "layers": list(cfg.pruner.layers),
        "options": {k: v if isinstance(v, (bool, int, float)) or v is None else str(v)
                    for k, v in cfg.options.items()},
        "tokens": {"visual_total": last.tokens_total, "visual_kept": last.tokens_kept,
                   "text": text_tokens, "prefill_input": text_tokens + last.tokens_total,
                   "prefill_final": text_tokens + last.tokens_kept},
        "num_generated": last.num_generated, "decode_passes": last.decode_passes,
        "flops": {k: float(v) for k, v in flops.items()},
        "ms": ms,
        "cpu_ms": cpu_ms,
        "peak_memory_mib": Spread.of([x.peak_mib for x in samples]).as_dict(),
    }


def _add_speedups(records: list[dict]) -> None:
    """speedup (wall medians), speedup_min (best of rounds), speedup_cpu (CPU-time medians;
    None on CUDA) and flop_bound_speedup, each versus the ratio-0 baseline.

    Pruners that hook the vision encoder (VisPruner reads its attention) add FLOPs inside the
    vision stage; the input is identical for all records, so the excess over the baseline's
    vision FLOPs is theirs: flops.pruner_in_vision, kept in total_without_vision.
    """
    base = records[0]
    bms, bfl = base["ms"], base["flops"]
    for r in records:
        fl = r["flops"]
        fl["pruner_in_vision"] = max(0.0, fl["vision"] - bfl["vision"])
        fl["total_without_vision"] = fl["total"] - fl["vision"] + fl["pruner_in_vision"]
    for r in records:
        ms, fl = r["ms"], r["flops"]
        # medians are the headline; minima (best of rounds) resist background load
        for key, stat, cur_ms, ref_ms in (("speedup", "median", ms, bms),
                                          ("speedup_min", "min", ms, bms),
                                          ("speedup_cpu", "median", r["cpu_ms"],
                                           base["cpu_ms"])):
            if cur_ms is None or ref_ms is None:
                r[key] = None
                continue
            cur = {k: v[stat] for k, v in cur_ms.items()}
            ref = {k: v[stat] for k, v in ref_ms.items()}
            r[key] = {
                "prefill": _ratio(ref["prefill"], cur["prefill"]),
                "prefill_with_scoring": _ratio(ref["prefill"] + ref["scoring"],
                                               cur["prefill"] + cur["scoring"]),
                "decode_per_token": _ratio(ref["decode_per_token"], cur["decode_per_token"]),
                "plan": _ratio(ref["plan"], cur["plan"]),
            }
        r["flop_bound_speedup"] = {
            "prefill": _ratio(bfl["prefill"], fl["prefill"]),
            "prefill_with_pruner": _ratio(bfl["prefill"],
                                          fl["prefill"] + fl["pruner"] + fl["pruner_in_vision"]),
            "decode_per_token": _ratio(bfl["decode_per_token"], fl["decode_per_token"]),
            "total": _ratio(bfl["total"], fl["total"]),
            "total_without_vision": _ratio(bfl["total_without_vision"],
                                           fl["total_without_vision"]),
        }
