"""VLA-Pruner: the temporal part (per-stream history, smoothing, resets), the merge-filter,
and the decode-step attention it records, checked against eager attention weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.pruning.base import DecodeRecord, FrameExtras, PruneContext, ViewTokens
from fastdrivevla_ros.pruning.registry import build_pruner
from fastdrivevla_ros.pruning.vla_pruner import action_rows, merge_filter


def _max_min_reference(x: np.ndarray, k: int) -> list[int]:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1.0 - u @ u.T
    n = len(x)
    start = max(range(n), key=lambda i: min(d[i][j] for j in range(n) if j != i))
    chosen = [start]
    while len(chosen) < k:
        rest = [j for j in range(n) if j not in chosen]
        chosen.append(max(rest, key=lambda j: min(d[s][j] for s in chosen)))
    return chosen


def _synthetic(sizes, seed=0):
    """Views plus a fixed random causal 'attention' over a sequence [text, views..., text]."""
    g = torch.Generator().manual_seed(seed)
    views, pos = [], 4
    for v, n in enumerate(sizes):
        feats = torch.randn(n, 16, generator=g)
        views.append(ViewTokens(f"CAM_{v}", (1, n), torch.arange(n), feats, feats.clone(),
                                torch.arange(pos, pos + n)))
        pos += n
    length = pos + 6
    logits = torch.randn(2, length, length, generator=g)
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)
    probs = torch.softmax(logits.masked_fill(causal, float("-inf")), dim=-1)
    ctx = PruneContext(layer=3, views=views, hidden=torch.zeros(length, 16),
                       position_ids=torch.zeros(3, length, dtype=torch.long),
                       input_ids=torch.zeros(length, dtype=torch.long), model=None,
                       attention=lambda rows: probs[:, rows])
    return ctx, probs


def test_merge_filter_is_union_of_top_k_then_max_min_diversity():
    g = torch.Generator().manual_seed(1)
    semantic, action = torch.rand(40, generator=g), torch.rand(40, generator=g)
    emb = torch.randn(40, 8, generator=g)
    k = 10
    union = sorted(set(np.argsort(-semantic.numpy())[:k]) | set(np.argsort(-action.numpy())[:k]))
    assert len(union) > k
    expected = sorted(union[i] for i in _max_min_reference(emb[union].double().numpy(), k))
    assert merge_filter(semantic, action, emb, k).tolist() == expected
    # identical top-k sets need no filtering
    assert merge_filter(semantic, semantic, emb, k).tolist() == sorted(
        np.argsort(-semantic.numpy())[:k].tolist())


def _official_guided(history: list[np.ndarray], decay: float) -> np.ndarray:
    """MINT-SJTU/VLA-Pruner `predict_action`, transcribed: av_hist oldest .. newest."""
    weights = np.array([decay ** i for i in range(len(history) - 1, -1, -1)], dtype=np.float32)
    guided = np.zeros(len(history[0]), dtype=np.float32)
    for i in range(len(weights)):
        guided += weights[i] * history[-1 - i]
    return guided / np.sum(guided)


def _with_history(ctx, frames, **options):
    pruner = build_pruner("vla_pruner", window=3, decay=0.8, **options)
    for i, f in enumerate(frames):
        # no decode data: nothing stored
        pruner.observe(DecodeRecord([], [], 0, extras=FrameExtras(timestamp=0.5 * i)))
        pruner.stream(FrameExtras()).frames.append([f])
    return pruner


def test_warm_up_keeps_the_semantic_top_k():
    ctx, probs = _synthetic([30])
    sem = probs.mean(0)[:, 4:34].sum(0) / probs.shape[1]          # mean over heads and all rows
    warm = build_pruner("vla_pruner", window=3, decay=0.8).select(ctx, [8])
    assert warm.kept[0].tolist() == sorted(np.argsort(-sem.numpy())[:8].tolist())


def test_default_history_weights_match_the_official_code_oldest_frame_heaviest():
    ctx, probs = _synthetic([30])
    sem = probs.mean(0)[:, 4:34].sum(0) / probs.shape[1]
    g = torch.Generator().manual_seed(2)
    frames = [torch.rand(30, generator=g) for _ in range(3)]     # oldest .. newest
    frames[0][:10] += 3.0                   # the oldest frame favours tokens 0..9,
    frames[2][20:] += 3.0                   # the newest one tokens 20..29
    guided = torch.from_numpy(_official_guided([f.numpy() for f in frames], 0.8))
    expected = merge_filter(sem, guided, ctx.views[0].embeddings, 8)
    assert _with_history(ctx, frames).select(ctx, [8]).kept[0].tolist() == expected.tolist()
    recency = _with_history(ctx, frames, history_weights="recency").select(ctx, [8])
    assert recency.kept[0].tolist() != expected.tolist()


def test_recency_history_weights_weight_the_newest_frame_most():
    ctx, probs = _synthetic([30])
    sem = probs.mean(0)[:, 4:34].sum(0) / probs.shape[1]
    g = torch.Generator().manual_seed(2)
    frames = [torch.rand(30, generator=g) for _ in range(3)]     # oldest .. newest
    guided = 0.64 * frames[0] + 0.8 * frames[1] + 1.0 * frames[2]
    expected = merge_filter(sem, guided / guided.sum(), ctx.views[0].embeddings, 8)
    pruner = _with_history(ctx, frames, history_weights="recency")
    assert pruner.select(ctx, [8]).kept[0].tolist() == expected.tolist()
    with pytest.raises(ConfigError):
        build_pruner("vla_pruner", history_weights="newest")


def _frames(pruner, stream="default"):
    return len(pruner.streams[stream].frames) if stream in pruner.streams else 0


@pytest.fixture
def vla_engine(engine, camera_images):
    small = {"CAM_FRONT": np.ascontiguousarray(camera_images["CAM_FRONT"][::6, ::6])}
    engine.configure(cameras=("CAM_FRONT",), pruning_ratio=0.5, max_new_tokens=3)
    engine.pruner = build_pruner("vla_pruner", layer=1)
    return engine, small


def test_history_per_stream_with_resets_on_time_jump_and_new_scene(vla_engine):
    engine, images = vla_engine
    pruner = engine.pruner
    for i in range(4):
        engine.plan(images, extras={"stream": "a", "timestamp": 10.0 + 0.5 * i, "scene": "s1"})
        assert _frames(pruner, "a") == min(i + 1, 3)
    engine.plan(images, extras={"stream": "b", "timestamp": 10.0, "scene": "s1"})
    assert (_frames(pruner, "a"), _frames(pruner, "b")) == (3, 1)
    engine.plan(images, extras={"stream": "a", "timestamp": 13.1, "scene": "s1"})   # gap > 1.5 s
    assert _frames(pruner, "a") == 1
    engine.plan(images, extras={"stream": "a", "timestamp": 13.6, "scene": "s1"})
    engine.plan(images, extras={"stream": "a", "timestamp": 13.1, "scene": "s1"})   # backwards
    assert _frames(pruner, "a") == 1
    engine.plan(images, extras={"stream": "a", "timestamp": 13.6, "scene": "s1"})
    engine.plan(images, extras={"stream": "a", "timestamp": 14.1, "scene": "s2"})   # new scene
    assert _frames(pruner, "a") == 1
    pruner.reset()
    assert pruner.streams == {}


def test_action_attention_is_zero_on_pruned_tokens(vla_engine):
    engine, images = vla_engine
    result = engine.plan(images, extras={"timestamp": 0.0})
    (vec,) = engine.pruner.streams["default"].frames[-1]
    kept = np.zeros(len(vec), dtype=bool)
    kept[result.views[0].kept] = True
    assert engine.pruner.action_layer >= engine.pruner.layers[0]
    assert torch.all(vec[~kept] == 0) and torch.all(vec[kept] > 0) and float(vec.sum()) < 1


def test_decode_attention_matches_eager_attention_weights(tiny_model_dir, engine, camera_images):
    """With nothing pruned, the recorded action-layer attention of the decode steps equals
    eager attention weights of the full sequence (prompt + generated tokens)."""
    from fastdrivevla_ros.vla.loading import load_vla

    images = {"CAM_FRONT": np.ascontiguousarray(camera_images["CAM_FRONT"][::4, ::4])}
    engine.configure(cameras=("CAM_FRONT",), pruning_ratio=0.0, max_new_tokens=6)
    engine.pruner = pruner = build_pruner("vla_pruner")
    seen = {}
    observe = pruner.observe
    pruner.observe = lambda record: (seen.update(vars(record)), observe(record))
    engine.plan(images, extras={"timestamp": 0.0})
    (vec,) = pruner.streams["default"].frames[-1]

    inputs = engine.prepare(images)
    fed = seen["tokens"][:-1]                      # generated tokens that went through the LLM
    assert len(fed) >= 2
    ids = torch.cat([inputs.input_ids, torch.tensor([fed])], dim=1)
    mm = torch.cat([inputs.mm_token_type_ids, torch.zeros(1, len(fed), dtype=torch.long)], 1)
    eager, _, _ = load_vla(tiny_model_dir, attn_implementation="eager")
    with torch.no_grad():
        out = eager(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
                    pixel_values=inputs.pixel_values, image_grid_thw=inputs.image_grid_thw,
                    output_attentions=True)
    length = inputs.input_ids.shape[1]
    rows = out.attentions[pruner.action_layer][0, :, length:].mean(dim=(0, 1))   # [L + fed]
    slots = torch.nonzero(inputs.mm_token_type_ids[0] == 1).flatten()
    np.testing.assert_allclose(vec.numpy(), rows[slots].numpy(), rtol=1e-4, atol=1e-7)


def test_action_rows_pick_the_waypoint_number_tokens(tiny_vla):
    from fastdrivevla_ros.vla.prompt import format_planning

    _, tok, _ = tiny_vla
    text = format_planning(np.array([[1.5, -0.25]] * 6))
    tokens = tok.encode(text)
    rows = action_rows(tokens, len(tokens) - 1, tok)
    produced = "".join(tok.decode([tokens[r + 1]]) for r in rows.tolist())
    assert produced.replace(" ", "") == "1.50-0.25" * 6     # exactly the 12 numbers
    assert len(action_rows(tokens, len(tokens) - 1, None)) == len(tokens) - 1
