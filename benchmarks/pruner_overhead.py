#!/usr/bin/env python
"""Scoring overhead (ms) of ReconPruner and each peer pruner at the Qwen2.5-VL-3B width, on
synthetic tokens.

Two layouts: 6 views x 336 tokens (Impromptu-VLA's 672x392 per camera) and 1 view x 3,249
tokens (FastDriveVLA's 1596x1596). Everything a method reads is built at the 3B sizes: visual
tokens [N, 2048], a prompt of ~180 text tokens, ONE randomly initialised 3B decoder layer
(hidden 2048, 16 heads / 2 KV heads, MLP 11008; the attention rows come from the engine's own
`_AttentionRows`), and for VisPruner one 1280-wide ViT block (16 heads) over the 4 patches of
every token. The numbers are the pruner's own work (`select` / vision hook / `observe`), not
the engine's bookkeeping, at pruning ratio 0.5 by default; min and median of --repeats runs.

    python benchmarks/pruner_overhead.py                    # prints a markdown table
    python benchmarks/pruner_overhead.py --ratio 0.75 --repeats 5 --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from types import SimpleNamespace

import torch

LAYOUTS = {"6 x 336": [(14, 24)] * 6, "1 x 3,249": [(57, 57)]}
TEXT_BEFORE, TEXT_BETWEEN, TEXT_AFTER = 24, 4, 160     # prompt tokens around the images
DECODE_STEPS = 130                                      # a <PLANNING> answer's length


# ------------------------------------------------------------------------------ fixtures
def text_model(device):
    """One 3B-width decoder layer (+ rotary, embeddings) of Qwen2.5-VL-3B."""
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel

    cfg = Qwen2_5_VLConfig(text_config=dict(
        hidden_size=2048, intermediate_size=11008, num_hidden_layers=1, num_attention_heads=16,
        num_key_value_heads=2, vocab_size=4096, rope_theta=1_000_000.0, bos_token_id=None,
        eos_token_id=None, pad_token_id=None,
        rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})).text_config
    cfg._attn_implementation = "sdpa"
    return Qwen2_5_VLTextModel(cfg).eval().to(device)


def vision_block(device):
    """One 1280-wide Qwen2.5-VL ViT block (16 heads) and the tower attributes the hook reads."""
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VLVisionBlock, Qwen2_5_VLVisionRotaryEmbedding)

    vc = Qwen2_5_VLConfig(vision_config=dict(hidden_size=1280, num_heads=16, intermediate_size=3420,
                                             out_hidden_size=2048)).vision_config
    block = Qwen2_5_VLVisionBlock(vc).eval().to(device)
    rotary = Qwen2_5_VLVisionRotaryEmbedding(vc).to(device)
    tower = SimpleNamespace(spatial_merge_size=2, window_size=112, patch_size=14)
    return block, rotary, tower


def layout_sequence(grids, device):
    """input_ids [L], 3-D M-RoPE positions [3, L] (as get_rope_index builds them) and each
    view's sequence offset."""
    ids, pos, offsets, p = [], [], [], 0

    def text(n):
        nonlocal p
        ids.extend(torch.randint(0, 4000, (n,)).tolist())
        pos.extend([[p + i] * 3 for i in range(n)])
        p += n

    text(TEXT_BEFORE)
    for v, (rows, cols) in enumerate(grids):
        if v:
            text(TEXT_BETWEEN)
        offsets.append(len(ids))
        ids.extend([4095] * rows * cols)
        pos.extend([[p, p + r, p + c] for r in range(rows) for c in range(cols)])
        p += max(rows, cols)
    text(TEXT_AFTER)
    return (torch.tensor(ids, device=device), torch.tensor(pos, device=device).T.contiguous(),
            offsets)


class Frame:
    """One synthetic frame at one pruning stage: builds PruneContexts over alive tokens."""

    def __init__(self, grids, model, device):
        self.grids, self.model, self.device = grids, model, device
        self.ids, self.pos, self.offsets = layout_sequence(grids, device)
        n_seq = len(self.ids)
        g = torch.Generator(device="cpu").manual_seed(0)
        self.hidden0 = torch.randn(n_seq, 2048, generator=g).to(device)     # layer-0 tokens
        self.hidden = torch.randn(n_seq, 2048, generator=g).to(device)      # layer-K input
        self.harness = SimpleNamespace(model=SimpleNamespace(language_model=model),
                                       config=SimpleNamespace(text_config=model.config),
                                       get_input_embeddings=lambda: model.embed_tokens)

    def context(self, layer: int, alive: list[torch.Tensor] | None = None):
        """PruneContext at `layer` (0: merger outputs) with `alive` raster indices per view."""
        from fastdrivevla_ros.pruning.base import PruneContext, ViewTokens
        from fastdrivevla_ros.vla.engine import _AttentionRows

        sizes = [r * c for r, c in self.grids]
        alive = alive or [torch.arange(n, device=self.device) for n in sizes]
        keep = torch.ones(len(self.ids), dtype=torch.bool, device=self.device)
        for off, n, a in zip(self.offsets, sizes, alive):
            keep[off:off + n] = False
            keep[off + a] = True
        seq = torch.nonzero(keep).flatten()
        source = self.hidden0 if layer == 0 else self.hidden
        hidden, positions = source[seq], self.pos[:, seq]
        views = []
        for v, (off, a) in enumerate(zip(self.offsets, alive)):
            sp = torch.searchsorted(seq, off + a)
            views.append(ViewTokens(f"CAM_{v}", self.grids[v], a, hidden[sp],
                                    self.hidden0[off + a], sp))
        attention = None
        if layer > 0:
            pe = self.model.rotary_emb(hidden[None], positions[:, None, :])
            attention = _AttentionRows(self.model.layers[0], hidden, pe)
        return PruneContext(layer, views, hidden, positions, self.ids[seq], self.harness,
                            attention, {})


def timed(fn, repeats: int, device) -> tuple[float, float]:
    """(min, median) wall-clock ms of fn() over `repeats` runs after one warm-up call. On a
    shared CPU the minimum is the least disturbed estimate; the median shows the spread."""
    fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return min(out), statistics.median(out)


# ------------------------------------------------------------------------------ methods
def bench_layout(grids, ratio, repeats, device, model, vit) -> dict[str, tuple[float, float]]:
    from fastdrivevla_ros.pruning.base import view_budgets
    from fastdrivevla_ros.pruning.registry import build_pruner

    frame = Frame(grids, model, device)
    totals = [r * c for r, c in grids]
    budgets = view_budgets(totals, ratio)
    ms: dict[str, tuple[float, float]] = {}
    ctx0, ctx1 = frame.context(0), frame.context(1)
    ms["random (top-k only)"] = timed(lambda: build_pruner("random").select(ctx0, budgets),
                                      repeats, device)
    recon = recon_pruner(model, frame, device)
    ms["recon (ReconPruner, 0.077B)"] = timed(lambda: recon.select(ctx0, budgets), repeats,
                                              device)
    fastv = build_pruner("fastv", layer=1)
    ms["fastv"] = timed(lambda: fastv.select(ctx1, budgets), repeats, device)
    ms["sparsevlm (3 stages)"] = timed(sparsevlm_stages(frame, totals, budgets), repeats,
                                       device)
    ms["vispruner: ViT attention hook"] = timed(vit_attention(grids, vit, device), repeats,
                                                device)
    vis = build_pruner("vispruner")
    ctx0.extras.vision = {"vispruner_attention": [torch.rand(n, device=device)
                                                  for n in totals]}
    ms["vispruner: selection"] = timed(lambda: vis.select(ctx0, budgets), repeats, device)
    ms["divprune"] = timed(lambda: build_pruner("divprune").select(ctx0, budgets),
                           repeats, device)
    tfps = build_pruner("tfps", layer=1)
    ms["tfps"] = timed(lambda: tfps.select(ctx1, budgets), repeats, device)
    vla, record = vla_state(frame, ctx1, budgets, device)
    ms["vla_pruner: select (history full)"] = timed(lambda: vla.select(ctx1, budgets),
                                                    repeats, device)
    ms["vla_pruner: observe (after decode)"] = timed(lambda: vla.action_attention(record),
                                                     repeats, device)
    return ms


def recon_pruner(model, frame: Frame, device):
    """ReconPruner at 3B width (one full-attention decoder layer + query + scorer, random
    weights: the cost does not depend on them), attached to the synthetic frame."""
    from fastdrivevla_ros.pruning.recon import (ReconPruner, ReconPrunerConfig,
                                                ReconPrunerScorer, layer_config_from_vla)

    scorer = ReconPrunerScorer(untrained=True)
    scorer.net = ReconPruner(ReconPrunerConfig(layer=layer_config_from_vla(model.config),
                                               vision={})).eval().to(device)
    scorer._checked_for = id(frame.harness)     # synthetic model: nothing to check against
    return scorer


def sparsevlm_stages(frame: Frame, totals, final):
    """SparseVLM's three stages with their contexts built beforehand (the engine's work);
    returns the callable to time: the three `select` calls in order (raters at the first)."""
    from fastdrivevla_ros.pruning.registry import build_pruner

    pruner = build_pruner("sparsevlm", depth=36)
    stages, alive = [], None
    for layer, budgets in zip(pruner.layers, pruner.stage_budgets(final, totals)):
        ctx = frame.context(layer, alive)
        stages.append((ctx, budgets))
        alive = pruner.select(ctx, budgets).kept

    def run():
        for ctx, budgets in stages:
            pruner.select(ctx, budgets)
    return run


def vit_attention(grids, vit, device):
    """VisPruner's vision side: attention received in a 1280-wide block over 4N patches per
    image (window order) from the block's own qkv output, then 2x2 pooling and
    un-permutation. Returns the callable to time: the qkv projection is the model's own work
    (the hook reuses its output) and is computed here once, untimed."""
    from fastdrivevla_ros.pruning.vispruner import attention_received, merge_and_unpermute

    block, rotary, tower = vit
    thw = torch.tensor([[1, 2 * r, 2 * c] for r, c in grids], device=device)
    sizes = [4 * r * c for r, c in grids]
    x = torch.randn(sum(sizes), 1280, device=device)
    hpos = torch.cat([torch.arange(2 * r).repeat_interleave(2 * c) for r, c in grids])
    wpos = torch.cat([torch.arange(2 * c).repeat(2 * r) for r, c in grids])
    pe = rotary(x, torch.stack([hpos, wpos]).T.to(device))
    cu = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], device=device)
    qkv = block.attn.qkv(block.norm1(x))
    return lambda: merge_and_unpermute(tower, attention_received(
        qkv, cu, pe, block.attn.num_heads, block.attn.scaling), thw)


def vla_state(frame: Frame, ctx, budgets, device):
    """VLA-Pruner with a full history, and a decode record of DECODE_STEPS steps."""
    from transformers import DynamicCache

    from fastdrivevla_ros.pruning.registry import build_pruner
    from fastdrivevla_ros.pruning.base import DecodeRecord, FrameExtras
    from fastdrivevla_ros.vla.engine import _Sequence

    pruner = build_pruner("vla_pruner", layer=1, action_layer=0, depth=2)
    hist = pruner.stream(FrameExtras())
    for _ in range(pruner.window):
        hist.frames.append([torch.rand(len(v.indices)) for v in ctx.views])
    kept = pruner.select(ctx, budgets).kept
    keep = torch.ones(len(frame.ids), dtype=torch.bool, device=device)
    for off, v, k in zip(frame.offsets, ctx.views, kept):
        keep[off + v.indices] = False
        keep[off + k] = True
    alive = torch.nonzero(keep).flatten()
    seq = _Sequence(frame.hidden[alive], frame.pos[:, alive], alive, list(kept), frame.offsets)
    cache = DynamicCache(config=frame.model.config)
    keys = torch.randn(1, 2, len(alive) + DECODE_STEPS, 128, device=device)
    cache.update(keys, keys, 0)
    record = DecodeRecord(list(range(DECODE_STEPS + 1)), [False] * (DECODE_STEPS + 1), 0,
                          decode_inputs={0: torch.randn(DECODE_STEPS, 2048, device=device)},
                          cache=cache, sequence=seq, grids=frame.grids, model=frame.harness)
    return pruner, record


def matmul_gflops(device) -> float:
    """Throughput of a 2048^3 float32 matmul now: puts the ms in context on a shared CPU."""
    a = torch.randn(2048, 2048, device=device)
    ms = timed(lambda: a @ a, 3, device)[0]
    return 2 * 2048 ** 3 / ms / 1e6


def table(results: dict[str, dict[str, tuple[float, float]]]) -> str:
    names = list(next(iter(results.values())))
    layouts = list(results)
    lines = ["| Method | " + " | ".join(f"{k} tokens: min (median) ms" for k in layouts) + " |",
             "|---|" + "---:|" * len(layouts)]
    for name in names:
        cells = [f"{results[k][name][0]:.1f} ({results[k][name][1]:.1f})" for k in layouts]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratio", type=float, default=0.5, help="pruning ratio (budget per view)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=list(LAYOUTS))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    with torch.inference_mode():
        model, vit = text_model(device), vision_block(device)
        results = {k: bench_layout(LAYOUTS[k], args.ratio, args.repeats, device, model, vit)
                   for k in args.layouts}
        gflops = matmul_gflops(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"pruning ratio {args.ratio}, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, {args.repeats} runs; float32 matmul "
          f"{gflops:.0f} GFLOP/s, load average {load:.1f}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
