"""Measuring instruments for the benchmarks: FLOPs per stage, wall clock, peak memory, stats.

Everything here is device-agnostic: on CUDA the timers use events + synchronisation and memory
is `torch.cuda.max_memory_allocated`; on CPU the timers use `perf_counter` and memory is the
process RSS sampled by a background thread (CPU PyTorch has no allocator peak counter).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """q [b, h, Lq, d], k/v [b, h_kv, Lk, d] -> 4*b*h*Lq*Lk*d (FlopCounterMode passes shapes)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# CPU SDPA dispatches to an op FlopCounterMode does not know (torch 2.4-2.13); count it with the
# same formula as the CUDA flash/efficient kernels (full L_q x L_k scores, GQA-aware).
_EXTRA_FLOP_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FLOP_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = \
        _cpu_sdpa_flop

#: substrings of op names counted as attention (the quadratic term) rather than matmul
ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "efficient_attention", "flex_attention")


def is_attention_op(op_name: str) -> bool:
    return any(key in op_name for key in ATTENTION_OPS)


class NestedStages:
    """Attribute a cumulative quantity to named, possibly nested stages.

    snapshot() returns the quantity so far as a Counter (FLOPs per op, CPU seconds, ...). Each
    `stage(name)` block is credited with what accrued while it ran minus what its nested
    stages were credited (so "prefill" excludes the pruner's scoring that runs between its
    layers, and nothing is counted twice).
    """

    def __init__(self, snapshot: Callable[[], Counter]):
        self.snapshot = snapshot
        self.by_stage: dict[str, Counter] = {}
        self.calls: Counter = Counter()
        self._children: list[Counter] = []

    @contextmanager
    def stage(self, name: str):
        before = self.snapshot()
        self._children.append(Counter())
        try:
            yield
        finally:
            delta = self.snapshot()
            delta.subtract(before)
            nested = self._children.pop()
            own = Counter(delta)
            own.subtract(nested)
            self.by_stage.setdefault(name, Counter()).update(own)
            self.calls[name] += 1
            if self._children:
                self._children[-1].update(delta)

    def own(self, stage: str) -> float:
        """What one stage accrued itself (0 if it never ran)."""
        return sum(self.by_stage.get(stage, Counter()).values())


class StageFlops(NestedStages):
    """One FlopCounterMode over a whole run, attributed to stages (per-op counts kept, so
    attention (SDPA) can be told apart from matmuls)."""

    def __init__(self):
        self.counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
        super().__init__(self._flops_so_far)

    def __enter__(self) -> "StageFlops":
        self.counter.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.counter.__exit__(*exc)

    def _flops_so_far(self) -> Counter:
        return Counter({str(op): int(n) for op, n in
                        self.counter.get_flop_counts().get("Global", {}).items()})

    def total(self, stage: str | None = None) -> int:
        """All FLOPs (stage=None) or one stage's own FLOPs."""
        return int(sum(self.snapshot().values()) if stage is None else self.own(stage))

    def attention(self, stage: str) -> int:
        """FLOPs of attention kernels (SDPA & co.) within one stage."""
        return int(sum(n for op, n in self.by_stage.get(stage, Counter()).items()
                       if is_attention_op(op)))


def cpu_stages() -> NestedStages:
    """Process CPU seconds per stage: unlike wall time, not inflated when other processes
    share the cores (meaningful on CPU with 1 torch thread; OpenMP spin-waits inflate it with
    more threads under contention)."""
    return NestedStages(lambda: Counter({"s": time.process_time()}))


@contextmanager
def wrapped_methods(obj, names: tuple[str, ...], around):
    """Temporarily shadow bound methods `names` of `obj` (an instance attribute wins over the
    class's method) by `around(name, original)(*args)`; restores them even on error."""
    saved = {n: obj.__dict__.get(n) for n in names}
    for n in names:
        setattr(obj, n, around(n, getattr(obj, n)))
    try:
        yield obj
    finally:
        for n, old in saved.items():
            if old is None:
                delattr(obj, n)
            else:
                setattr(obj, n, old)


class WallTimer:
    """Wall-clock ms of a block; CUDA events + synchronisation on GPU so queued kernels count."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.ms = float("nan")

    @contextmanager
    def __call__(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            stream = torch.cuda.current_stream(self.device)
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record(stream)
            try:
                yield self
            finally:
                end.record(stream)
                torch.cuda.synchronize(self.device)
                self.ms = float(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            try:
                yield self
            finally:
                self.ms = (time.perf_counter() - t0) * 1e3


class MemoryProbe:
    """Peak memory (MiB) within `window()` blocks.

    CUDA: `torch.cuda.max_memory_allocated` (reset at each window).
    CPU: the process resident set size sampled every `interval_s` by a daemon thread (plus at the
    window's start and end). RSS includes the loaded model and whatever the allocator keeps, so
    compare windows of one run rather than absolute values across machines.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.005):
        import psutil

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.interval_s = interval_s
        self._process = psutil.Process()
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss_mib(self) -> float:
        return self._process.memory_info().rss / 2**20

    def _sample(self) -> None:
        rss = self._process.memory_info().rss
        with self._lock:
            self._peak = max(self._peak, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "MemoryProbe":
        if not self.cuda:
            self._thread = threading.Thread(target=self._loop, name="rss-probe", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @contextmanager
    def window(self):
        """Yields a one-item list that holds the window's peak MiB once the block ends."""
        out = [float("nan")]
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with self._lock:
                self._peak = 0
            self._sample()
        try:
            yield out
        finally:
            if self.cuda:
                torch.cuda.synchronize(self.device)
                out[0] = torch.cuda.max_memory_allocated(self.device) / 2**20
            else:
                self._sample()
                with self._lock:
                    out[0] = self._peak / 2**20


@dataclass
class Spread:
    """Summary of repeated measurements."""

    median: float
    p25: float
    p75: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values) -> "Spread":
        v = [float(x) for x in values]
        if not v:
            raise ValueError("no measurements to summarise")
        q = np.percentile(v, [25, 75])
        return cls(statistics.median(v), float(q[0]), float(q[1]), min(v), max(v), len(v))

    def as_dict(self) -> dict:
        return {"median": self.median, "p25": self.p25, "p75": self.p75, "min": self.min,
                "max": self.max, "n": self.n}


def synthetic_frames(cameras, width: int = 1600, height: int = 900, seed: int = 0) -> dict:
    """Deterministic structured RGB frames {camera: [height, width, 3] uint8} (nuScenes size by
    default). Content does not change the cost of any stage: budgets fix the kept counts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    out = {}
    for i, cam in enumerate(cameras):
        base = np.stack([(xx + 50 * i) % 256, (yy * 2) % 256, (xx + yy) % 256], -1)
        out[cam] = (base + rng.integers(0, 30, base.shape)).clip(0, 255).astype(np.uint8)
    return out
