"""The whole plan, side by side: transformers' `generate` against our decoding modes.

Rows (one engine, one input, interleaved timed rounds):
  * transformers generate: the baseline a user would otherwise run: the model's own
    `generate` (greedy, unpruned, no grammar) on the same inputs, made to emit exactly as many
    tokens as our step-by-step constrained reply (stop tokens off), preprocessing included;
  * ours, step by step: constrained decoding, one forward pass per emitted token;
  * ours, forced tokens: what the grammar fixes rides along with the free tokens;
  * ours, forced tokens + pruning at each given ratio (`pruner`);
  * with `drafts`, each forced-tokens row again per draft kind (speculative decoding, same
    reply): `oracle` = the row's own reply (text) as draft (a car whose plan the guess knows),
    `wrong` = every number's first character wrong (every draft rejected at once).
Each row reports plan / preprocess / vision / scoring / prefill / decode ms, decode passes and
tokens emitted (draft rows: draft / accepted tokens too); speedups are against the generate
row (plan) and the step-by-step row (decode).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from fastdrivevla_ros.bench.measure import Spread, WallTimer

STAGES = ("preprocess", "vision", "scoring", "prefill", "decode")


@dataclass
class _Mode:
    label: str
    forced_tokens: bool
    ratio: float
    pruner: object | None = None      # None: transformers generate
    draft: str = "none"               # none | oracle | wrong


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _GenerateClock:
    """Stage times of one `generate` call: vision (encoder forward hooks), prefill (until the
    first logits reach the logits processors), decode (the rest)."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device

    def __call__(self, input_ids, scores):     # a LogitsProcessor
        if self.first is None:
            _sync(self.device)
            self.first = time.perf_counter()
        return scores

    @contextmanager
    def vision_hooks(self):
        def pre(*_):
            _sync(self.device)
            self._v0 = time.perf_counter()

        def post(*_):
            _sync(self.device)
            self.vision_s += time.perf_counter() - self._v0

        visual = self.model.model.visual
        handles = [visual.register_forward_pre_hook(pre), visual.register_forward_hook(post)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def run(self, inputs, new_tokens: int) -> dict[str, float]:
        from transformers import LogitsProcessorList

        self.first, self.vision_s = None, 0.0
        kwargs = {k: v.to(self.device) for k, v in inputs.generate_kwargs().items()}
        with self.vision_hooks():
            _sync(self.device)
            t0 = time.perf_counter()
            self.model.generate(**kwargs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                do_sample=False, eos_token_id=None,
                                logits_processor=LogitsProcessorList([self]))
            _sync(self.device)
            t1 = time.perf_counter()
        first = self.first if self.first is not None else t1
        return {"vision": self.vision_s * 1e3,
                "prefill": (first - t0 - self.vision_s) * 1e3,
                "decode": (t1 - first) * 1e3}


def _generate_sample(engine, frames: dict, clock: _GenerateClock, new_tokens: int) -> dict:
    timer = WallTimer(engine.device)
    with timer():
        t0 = time.perf_counter()
        inputs = engine.prepare(frames)
        preprocess = (time.perf_counter() - t0) * 1e3
        ms = clock.run(inputs, new_tokens)
    return {"ms": {"preprocess": preprocess, "scoring": 0.0, **ms, "plan": timer.ms},
            "decode_passes": new_tokens - 1, "tokens_emitted": new_tokens}


def _engine_sample(engine, frames: dict, mode: _Mode, draft=None) -> dict:
    engine.pruner = mode.pruner
    engine.configure(pruning_ratio=mode.ratio, forced_tokens=mode.forced_tokens,
                     constrained=True, draft="none")
    mode.pruner.reset()
    timer = WallTimer(engine.device)
    with timer():
        result = engine.plan(frames, draft=draft)
    ms = {s: float(result.timings_ms.get(s, 0.0)) for s in STAGES}
    return {"ms": {**ms, "plan": timer.ms}, "decode_passes": result.decode_passes,
            "tokens_emitted": result.num_generated, "status": result.status,
            "draft_tokens": result.draft_tokens, "accepted_tokens": result.accepted_tokens,
            "waypoints": result.waypoints, "text": result.text}


def wrong_draft(waypoints: np.ndarray) -> np.ndarray:
    """[6, 2] a draft whose every number starts wrong: the other sign and a 7 (a reply's
    '-955.55' meets '7.77', its '0.00' meets '-7.77'), so each is rejected at its first token."""
    return np.where(np.asarray(waypoints) < 0, 7.77, -7.77)


def run_plan_modes(engine, frames: dict, pruner, ratios=(0.5, 0.75), repeats: int = 3,
                   warmup: int = 1, progress: bool = True, drafts=()) -> list[dict]:
    """Rows of the whole-plan table (see the module docstring); `pruner` prunes the pruned
    rows; `drafts`: draft kinds (oracle, wrong) repeating each forced-tokens row."""
    from fastdrivevla_ros.pruning.registry import build_pruner

    saved = engine.pruner, engine.settings
    none = build_pruner("none")
    modes = [_Mode("transformers generate", False, 0.0),
             _Mode("ours, step by step", False, 0.0, none),
             _Mode("ours, forced tokens", True, 0.0, none)]
    modes += [_Mode(f"ours, forced tokens + {pruner.name} {r:.0%}", True, r, pruner)
              for r in ratios]
    modes += [replace(m, label=f"{m.label} + draft {kind}", draft=kind)
              for kind in drafts for m in modes[2:]]
    clock = _GenerateClock(engine.model, engine.device)
    try:
        step = _engine_sample(engine, frames, modes[1])      # fixes the baseline's length
        new_tokens = step["tokens_emitted"]
        replies = {(m.pruner.name, m.ratio): _engine_sample(engine, frames, m)
                   for m in modes[2:] if m.draft == "none"}

        def sample(mode):
            if mode.pruner is None:
                return _generate_sample(engine, frames, clock, new_tokens)
            draft = None
            if mode.draft != "none":
                reply = replies[mode.pruner.name, mode.ratio]
                draft = reply["text"] if mode.draft == "oracle" else \
                    wrong_draft(reply["waypoints"])
            return _engine_sample(engine, frames, mode, draft)

        for mode in tqdm(modes, desc="plan modes warm-up", disable=not progress or not warmup):
            for _ in range(warmup):
                sample(mode)
        samples = {m.label: [] for m in modes}
        for _ in tqdm(range(repeats), desc="plan modes", disable=not progress):
            for mode in modes:
                samples[mode.label].append(sample(mode))
    finally:
        engine.pruner, engine.settings = saved
    rows = [_row(m, samples[m.label]) for m in modes]
    base, step = rows[0], rows[1]
    for r in rows:
        r["speedup_plan_vs_generate"] = _ratio(base["ms"]["plan"]["median"],
                                               r["ms"]["plan"]["median"])
        r["speedup_decode_vs_step_by_step"] = _ratio(step["ms"]["decode"]["median"],
                                                     r["ms"]["decode"]["median"])
    plain = {(r["pruner"], r["ratio"]): r["ms"]["plan"]["median"] for r in rows[2:]
             if r["draft"] == "none"}
    for r in rows:         # what a draft costs or saves against the same row without one
        r["plan_time_vs_draft_none"] = None if r["draft"] == "none" else \
            _ratio(r["ms"]["plan"]["median"], plain[r["pruner"], r["ratio"]])
    return rows


def _row(mode: _Mode, samples: list[dict]) -> dict:
    last = samples[-1]
    return {"label": mode.label, "engine": "transformers" if mode.pruner is None else "ours",
            "pruner": "none" if mode.pruner is None else mode.pruner.name,
            "ratio": mode.ratio, "forced_tokens": mode.forced_tokens, "draft": mode.draft,
            "draft_tokens": int(last.get("draft_tokens", 0)),
            "accepted_tokens": int(last.get("accepted_tokens", 0)),
            "decode_passes": int(last["decode_passes"]),
            "tokens_emitted": int(last["tokens_emitted"]),
            "status": last.get("status", "n/a"),
            "ms": {k: Spread.of([s["ms"][k] for s in samples]).as_dict()
                   for k in (*STAGES, "plan")}}


def _ratio(a: float, b: float) -> float | None:
    return float(a) / float(b) if b and b > 0 else None
