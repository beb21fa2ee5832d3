"""The whole-plan table for one GPU: transformers generate vs ours, every decoding mode.

    python benchmarks/gpu_plan.py --model DIR [--device cuda] [--dtype bfloat16] [--out DIR]

One model load, one input (six synthetic 1600x900 views), timed rounds interleaved within
each decode step. Rows: transformers `generate` (greedy, unpruned, no grammar, as many tokens
as our reply; its own preprocessing included) and ours, constrained with forced tokens, for
every decode step (dynamic / static / compiled) x draft (none / oracle: the plan's own reply
text as the draft, as `bench --draft oracle` does; only where the engine takes
`plan(..., draft=)`) x pruning ratio (0 / 0.75, --pruner). Each row: plan ms (median) and its
speedup over generate, stage medians (preprocess / vision / scoring / prefill / decode),
decode passes, tokens, draft / accepted tokens, peak memory (CUDA: max allocated; CPU: sampled
RSS, model included), and whether the reply equals the dynamic, draft-free one (exact in
float32; bf16 kernels may differ). Writes gpu_plan.json and gpu_plan.md under --out.
It drives the engine with the bench's own timers rather than running `fastdrivevla bench`
once per decode step: that would load the 3B model and time `generate` three times, too slow
for the 6-minute budget. benchmarks/gpu_plan.sh builds the model and runs this; its --smoke
runs it on CPU with the tiny preset.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("preprocess", "vision", "scoring", "prefill", "decode")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="checkpoint dir (make-tiny-model --preset 3b)")
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"),
                   help="model dtype (default bfloat16)")
    p.add_argument("--decode-steps", default="dynamic,static,compiled",
                   help="comma-separated decode steps (default all three)")
    p.add_argument("--drafts", default="none,oracle", help="none and/or oracle")
    p.add_argument("--ratios", default="0,0.75", help="pruning ratios (default 0,0.75)")
    p.add_argument("--pruner", default="recon",
                   help="pruner of the pruned rows (recon without weights: timed untrained)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--out", default="out/gpu_plan", help="where gpu_plan.json/.md go")
    args = p.parse_args(argv)
    args.decode_steps = [s for s in args.decode_steps.split(",") if s]
    args.drafts = [s for s in args.drafts.split(",") if s]
    args.ratios = [float(r) for r in args.ratios.split(",") if r]
    bad = [s for s in args.decode_steps if s not in ("dynamic", "static", "compiled")] + \
        [d for d in args.drafts if d not in ("none", "oracle")]
    if bad or args.repeats < 1 or args.warmup < 0:
        p.error(f"unknown decode step / draft {bad}, or repeats < 1 / warmup < 0")
    return args


def _median(samples: list[dict], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from fastdrivevla_ros.bench.measure import MemoryProbe, synthetic_frames, WallTimer
    from fastdrivevla_ros.bench.plans import _generate_sample, _GenerateClock
    from fastdrivevla_ros.bench.runner import _build_for_timing, environment
    from fastdrivevla_ros.pruning.registry import build_pruner
    from fastdrivevla_ros.vla.engine import DrivingVLA
    from fastdrivevla_ros.vla.prompt import CAMERAS

    engine = DrivingVLA.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                        cameras=CAMERAS, constrained=True, forced_tokens=True)
    takes_draft = "draft" in inspect.signature(engine.plan).parameters
    drafts = [d for d in args.drafts if d == "none" or takes_draft]
    frames = synthetic_frames(CAMERAS)
    pruned, _ = _build_for_timing(args.pruner, None)
    unpruned = build_pruner("none")
    dev = torch.device(args.device)

    # the oracle draft: each ratio's own reply (same for every decode step: tested identical)
    oracle = {}
    for ratio in args.ratios:
        engine.pruner = unpruned if ratio == 0 else pruned
        engine.configure(pruning_ratio=ratio, decode_step="dynamic")
        oracle[ratio] = engine.plan(frames)
    new_tokens = oracle[args.ratios[0]].num_generated
    rows = [dict(label="transformers generate", decode_step="-", draft="-", ratio=0.0)]
    rows += [dict(label=f"ours {s} draft={d} ratio={r:g}", decode_step=s, draft=d, ratio=r)
             for s in args.decode_steps for d in drafts for r in args.ratios]
    clock = _GenerateClock(engine.model, engine.device)

    def sample(row: dict, probe) -> dict:
        with probe.window() as peak:
            if row["decode_step"] == "-":
                s = _generate_sample(engine, frames, clock, new_tokens)
                out = {**s["ms"], "passes": s["decode_passes"], "tokens": s["tokens_emitted"],
                       "draft_tokens": 0, "accepted_tokens": 0}
            else:
                engine.pruner = unpruned if row["ratio"] == 0 else pruned
                engine.configure(pruning_ratio=row["ratio"], decode_step=row["decode_step"])
                kwargs = {"draft": oracle[row["ratio"]].text} \
                    if row["draft"] == "oracle" else {}
                timer = WallTimer(engine.device)
                with timer():
                    r = engine.plan(frames, **kwargs)
                out = {**{k: r.timings_ms.get(k, 0.0) for k in STAGES}, "plan": timer.ms,
                       "passes": r.decode_passes, "tokens": r.num_generated,
                       "draft_tokens": getattr(r, "draft_tokens", 0),
                       "accepted_tokens": getattr(r, "accepted_tokens", 0),
                       "same_reply": r.text == oracle[row["ratio"]].text}
        return {**out, "peak_mib": peak[0]}

    # one block per decode step (generate first), rows interleaved within it: switching
    # static <-> compiled rebuilds the cache and would re-record CUDA graphs every round
    samples = {i: [] for i in range(len(rows))}
    blocks = [[0]] + [[i for i, r in enumerate(rows) if r["decode_step"] == s]
                      for s in args.decode_steps]
    with MemoryProbe(dev) as probe:
        for block in blocks:
            for _ in range(args.warmup):
                for i in block:
                    sample(rows[i], probe)
            for _ in range(args.repeats):
                for i in block:
                    samples[i].append(sample(rows[i], probe))
    base = _median(samples[0], "plan")
    for i, row in enumerate(rows):
        s = samples[i]
        row.update({k: _median(s, k) for k in ("plan", *STAGES)})
        counts = ("passes", "tokens", "draft_tokens", "accepted_tokens")
        row.update({k: s[-1][k] for k in counts})
        row["peak_mib"] = max(x["peak_mib"] for x in s)
        row["speedup_vs_generate"] = base / row["plan"]
        row["same_reply"] = all(x.get("same_reply", True) for x in s)
    env = environment(engine, dev, args.dtype, "sdpa")
    doc = {"environment": env, "model": args.model, "repeats": args.repeats,
           "warmup": args.warmup, "pruner": pruned.name, "draft_supported": takes_draft,
           "grids": [list(g) for g in engine.prepare(frames).grids], "rows": rows}
    text = markdown(doc)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_plan.json").write_text(json.dumps(doc, indent=1, default=str))
    (out / "gpu_plan.md").write_text(text)
    print(text)
    return 0


def markdown(doc: dict) -> str:
    env = doc["environment"]
    device = env["device"]["name"]
    lines = [f"Whole plan, six views (token grid {doc['grids'][0]} each), {device}, "
             f"{env.get('dtype', '?')}; median of {doc['repeats']} (warm-up {doc['warmup']}); "
             f"pruned rows: {doc['pruner']}; draft oracle "
             + ("= the plan's own reply" if doc["draft_supported"] else
                "not available in this build (engine.plan takes no draft)"),
             "",
             "| row | plan ms | x generate | preprocess | vision | scoring | prefill | decode "
             "| passes | tokens | draft/accepted | peak MiB | reply = dynamic's |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["rows"]:
        lines.append(
            f"| {r['label']} | {r['plan']:.0f} | {r['speedup_vs_generate']:.2f} | "
            + " | ".join(f"{r[k]:.0f}" for k in STAGES)
            + f" | {r['passes']} | {r['tokens']} | {r['draft_tokens']}/{r['accepted_tokens']} "
            f"| {r['peak_mib']:.0f} | {'-' if r['decode_step'] == '-' else r['same_reply']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
