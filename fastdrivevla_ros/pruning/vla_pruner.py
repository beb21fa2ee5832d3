"""VLA-Pruner (MINT-SJTU, 2025): semantic + temporally smoothed action attention, merge-filter.

Official code (MINT-SJTU/VLA-Pruner, OpenVLA `modeling_prismatic.py` / `modeling_llama.py`):
  * pruning at LLM layer K = 3 with the prefill attention of layer K-1 (FastV's convention,
    which the OpenVLA code extends; the OFT port prunes after layer 3 with layer 3's own
    attention: `layer=4` here);
  * semantic score: prefill attention averaged over heads and ALL query rows, per visual token;
  * action score: the attention the action tokens paid to each visual token at layer 15 of the
    previous steps (mean over heads and action tokens), kept for the last w = 3 steps,
    combined with decay weights (decay 0.8) and normalised to sum 1; a token pruned at a step
    got 0 attention at that step. `predict_action` builds the weights as
    `[decay ** i for i in range(w - 1, -1, -1)]` and adds `weights[i] * av_hist[-1 - i]`, so
    the NEWEST step gets decay^(w-1) = 0.64 and the OLDEST gets 1.0. That is the default here
    (history_weights='official', selections identical to the official code); decay read as
    recency weighting (newest step 1.0, then 0.8, 0.64 back in time), as "temporal smoothing"
    suggests, is the named option history_weights='recency';
  * merge-filter: the union of the top-K tokens of each score; if it holds more than K tokens,
    DivPrune's max-min diversity on the layer-0 embeddings of the union picks K of them;
  * warm-up: until w steps of history exist the official code does not prune at all. The engine
    requires exactly K tokens per view, so here warm-up frames keep the semantic top-K.

Driving adaptation: the "action tokens" are the waypoint tokens of the <PLANNING> answer (the
numbers after "[x, y]:"; every generated token when no tokenizer is given in the record). History
is kept per camera stream (extras.stream, default 'default') in time order, and reset when
the scene changes (extras.scene) or time jumps (extras.timestamp going backwards or
advancing more than `max_gap_s`). Layer 15 of the 32-layer Llama-2 maps to round(15 D / 32)
for a D-layer LLM (17 for the 3B). The attention rows are computed directly from the recorded
decode-step inputs and the KV cache, so the model stays on SDPA / FlashAttention.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

import torch

from fastdrivevla_ros.compat import cached_keys
from fastdrivevla_ros.errors import ConfigError, InputError
from fastdrivevla_ros.pruning.base import DecodeRecord, FrameExtras, PruneContext, Pruner, \
    Selection, top_k_indices
from fastdrivevla_ros.pruning.similarity import max_min_diverse
from fastdrivevla_ros.pruning.sparsevlm import scale_layer

ACTION_LAYER_REFERENCE = 15     # official action-attention layer of the 32-layer LLM
# How the w history frames are weighted (see the module docstring):
#   official: oldest frame decay^0 = 1.0 ... newest decay^(w-1), as MINT-SJTU's code does;
#   recency:  newest frame 1.0 ... oldest decay^(w-1), decay read as recency weighting.
HISTORY_WEIGHTS = ("official", "recency")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
WAYPOINT_HEADER = "[x, y]:"


@dataclass
class StreamHistory:
    """Action-attention history of one camera stream: per frame, per view [N_v] (raster)."""

    frames: deque = field(default_factory=deque)
    timestamp: float | None = None
    scene: object = None


class VLAPruner(Pruner):
    """Semantic (prefill) + temporal action attention, merged, then filtered by diversity.

    layer: LLM layer K whose input is pruned (official 3); action_layer: decode attention layer
    (default: layer 15 of 32 scaled to the depth); window, decay: history length and decay
    (official 3, 0.8); history_weights: 'official' (oldest frame weighted 1.0, as the official
    code) or 'recency' (newest frame 1.0); max_gap_s: a larger time
    step resets the history; chunk_rows: query rows per attention chunk (memory only).
    """

    name = "vla_pruner"

    def __init__(self, layer: int = 3, action_layer: int | None = None, window: int = 3,
                 decay: float = 0.8, max_gap_s: float = 1.5, depth: int = 36,
                 chunk_rows: int = 1024, history_weights: str = "official"):
        if int(layer) != layer or layer < 1:
            raise ConfigError(f"vla_pruner: layer must be an integer >= 1, got {layer!r}")
        if window < 1 or not 0.0 < decay <= 1.0 or max_gap_s <= 0 or chunk_rows < 1:
            raise ConfigError("vla_pruner: need window >= 1, 0 < decay <= 1, max_gap_s > 0, "
                              "chunk_rows >= 1")
        if history_weights not in HISTORY_WEIGHTS:
            raise ConfigError(f"vla_pruner: history_weights must be one of {HISTORY_WEIGHTS}, "
                              f"got {history_weights!r}")
        self.history_weights = history_weights
        self.layers = (int(layer),)
        self.requested_action_layer = action_layer
        self.window, self.decay, self.max_gap_s = int(window), float(decay), float(max_gap_s)
        self.chunk_rows = int(chunk_rows)
        self.streams: dict[str, StreamHistory] = {}
        self.fit_depth(depth)

    # ------------------------------------------------------------------ configuration
    def fit_depth(self, depth: int) -> None:
        """Place the action-attention layer for an LLM of `depth` layers."""
        if self.layers[0] >= depth:
            raise ConfigError(f"vla_pruner prunes at layer {self.layers[0]}; the model has "
                              f"{depth} layers")
        layer = self.requested_action_layer
        if layer is None:
            layer = scale_layer(ACTION_LAYER_REFERENCE, depth)
        if not 0 <= layer < depth:
            raise ConfigError(f"vla_pruner: action_layer {layer} outside 0..{depth - 1}")
        self.record_decode_layers = (int(layer),)

    @property
    def action_layer(self) -> int:
        return self.record_decode_layers[0]

    def fit(self, model) -> None:
        self.fit_depth(model.config.text_config.num_hidden_layers)

    def reset(self) -> None:
        self.streams.clear()

    # ------------------------------------------------------------------ history
    def stream(self, extras: FrameExtras) -> StreamHistory:
        """This frame's stream history, cleared first on a new scene or a time jump."""
        key = str(extras.stream)
        hist = self.streams.setdefault(key, StreamHistory(deque(maxlen=self.window)))
        ts, scene = extras.timestamp, extras.scene
        jumped = (ts is not None and hist.timestamp is not None
                  and (float(ts) < hist.timestamp or float(ts) - hist.timestamp > self.max_gap_s))
        if jumped or (scene is not None and hist.scene is not None and scene != hist.scene):
            hist.frames.clear()
        return hist

    def guided_action(self, hist: StreamHistory, ctx: PruneContext) -> list[torch.Tensor] | None:
        """Per view [n_v] smoothed action attention of the alive tokens; None during warm-up."""
        if len(hist.frames) < self.window:
            return None
        sizes = [v.num_tokens for v in ctx.views]
        if any([len(a) for a in frame] != sizes for frame in hist.frames):
            hist.frames.clear()      # camera set or resolution changed: old history is moot
            return None
        out = []
        for v, view in enumerate(ctx.views):
            guided = sum(w * hist.frames[-1 - i][v] for i, w in enumerate(self.frame_weights()))
            total = float(guided.sum())
            guided = guided / total if total > 0 else guided
            out.append(guided.to(view.indices.device)[view.indices])
        return out

    def frame_weights(self) -> list[float]:
        """Weight of history frame -1 - i (i = 0 the newest), per `history_weights`."""
        steps = range(self.window) if self.history_weights == "recency" else \
            range(self.window - 1, -1, -1)
        return [self.decay ** i for i in steps]

    # ------------------------------------------------------------------ selection
    def select(self, ctx: PruneContext, budgets: list[int]) -> Selection:
        semantic = semantic_scores(ctx, self.chunk_rows)
        action = self.guided_action(self.stream(ctx.extras), ctx)
        kept = []
        for v, (view, k) in enumerate(zip(ctx.views, budgets)):
            if action is None or k >= len(view.indices):
                kept.append(top_k_indices(semantic[v], view.indices, k))
                continue
            kept.append(view.indices[merge_filter(semantic[v], action[v], view.embeddings, k)])
        return Selection(kept, semantic)

    def observe(self, record: DecodeRecord) -> None:
        """After a plan: append this frame's waypoint-token attention to its stream history."""
        extras = record.extras
        hist = self.stream(extras)
        attention = self.action_attention(record)
        if attention is not None:
            hist.frames.append(attention)
        if extras.timestamp is not None:
            hist.timestamp = float(extras.timestamp)
        if extras.scene is not None:
            hist.scene = extras.scene

    @torch.no_grad()
    def action_attention(self, record: DecodeRecord) -> list[torch.Tensor] | None:
        """Per view [N_v] (raster) attention of the waypoint tokens' queries at the action
        layer over that view's tokens, mean over heads and waypoint tokens (0 = pruned)."""
        inputs = record.decode_inputs.get(self.action_layer)
        if inputs is None or len(inputs) == 0 or record.model is None:
            return None
        rows = action_rows(record.tokens, len(inputs), record.tokenizer)
        if len(rows) == 0:
            return None
        seq = record.sequence
        keys = cached_keys(record.cache, self.action_layer)          # [1, kv, S, d]
        probs = decode_attention(record.model, self.action_layer, inputs[rows], rows,
                                 int(seq.positions.max()) + 1, keys, len(inputs))
        return _per_view(probs, seq, record.grids, keys.shape[2] - len(inputs))


def semantic_scores(ctx: PruneContext, chunk_rows: int = 1024) -> list[torch.Tensor]:
    """Per view [n_v]: attention of layer K-1 averaged over heads and all L query rows.
    Rows before the first visual token attend to no visual token (causal), so only the rows
    from there on are computed; the mean still divides by L."""
    if ctx.attention is None:
        raise InputError(f"vla_pruner needs an LLM layer K >= 1, got layer {ctx.layer}")
    length = len(ctx.input_ids)
    first = min(int(v.seq_positions.min()) for v in ctx.views if len(v.seq_positions))
    columns = torch.cat([v.seq_positions for v in ctx.views])
    total = torch.zeros(len(columns), dtype=torch.float32, device=ctx.hidden.device)
    for start in range(first, length, chunk_rows):
        rows = torch.arange(start, min(start + chunk_rows, length), device=ctx.hidden.device)
        total += ctx.attention(rows)[:, :, columns].float().mean(dim=0).sum(dim=0)
    return list(torch.split(total / length, [len(v.seq_positions) for v in ctx.views]))


def merge_filter(semantic: torch.Tensor, action: torch.Tensor, embeddings: torch.Tensor,
                 k: int) -> torch.Tensor:
    """Union of both scores' top-k (local indices, sorted); above k, max-min diversity on the
    layer-0 embeddings [n, D] keeps k of them. Returns [k] sorted local indices."""
    top = [torch.sort(s.float(), descending=True, stable=True).indices[:k]
           for s in (semantic, action)]
    union = torch.unique(torch.cat(top))                       # sorted
    if len(union) > k:
        union = torch.sort(union[max_min_diverse(embeddings[union], k).order]).values
    return union


def action_rows(tokens: list[int], fed: int, tokenizer=None) -> torch.Tensor:
    """Recorded decode rows whose query produced a waypoint token. Row r is the input of
    generated token r, whose attention produced token r + 1. Without a tokenizer (or when the
    answer has no waypoint header) every recorded row counts."""
    every = torch.arange(fed)
    if tokenizer is None or fed == 0:
        return every
    text, starts = "", []
    for i in range(len(tokens)):
        starts.append(len(text))
        text = tokenizer.decode(tokens[:i + 1])
    header = text.rfind(WAYPOINT_HEADER)
    if header < 0:
        return every
    spans = [m.span() for m in NUMBER.finditer(text, header + len(WAYPOINT_HEADER))]
    ends = starts[1:] + [len(text)]
    wanted = [t for t in range(1, len(tokens))
              if any(a < ends[t] and starts[t] < b for a, b in spans)]
    rows = torch.tensor([t - 1 for t in wanted if t - 1 < fed], dtype=torch.long)
    return rows if len(rows) else every


def decode_attention(model, layer_index: int, inputs: torch.Tensor, rows: torch.Tensor,
                     first_position: int, keys: torch.Tensor, fed: int) -> torch.Tensor:
    """Softmax attention of decode steps `rows` at one decoder layer over the KV cache.
    inputs: [r, D] the layer inputs of those steps; keys: [1, kv_heads, S, d] the layer's cache
    (rotated keys); step t sees the prefill and decode keys up to its own. Returns [S], the mean
    over heads and rows."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

    text = model.model.language_model
    layer = text.layers[layer_index]
    attn = layer.self_attn
    rows = rows.to(keys.device)
    x = layer.input_layernorm(inputs.to(keys.device)[None])              # [1, r, D]
    q = attn.q_proj(x).view(1, len(rows), -1, attn.head_dim).transpose(1, 2)
    position = (first_position + rows).view(1, 1, -1).expand(3, 1, -1)
    cos, sin = text.rotary_emb(x, position)
    q, _ = apply_rotary_pos_emb(q, q, cos, sin)
    k = keys.repeat_interleave(attn.num_key_value_groups, dim=1)
    scores = (q @ k.transpose(-1, -2)).float() * attn.scaling             # [1, H, r, S]
    prefill = keys.shape[2] - fed
    hidden = torch.arange(keys.shape[2], device=keys.device)[None, :] > (prefill + rows)[:, None]
    probs = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
    return probs[0].mean(dim=(0, 1))


def _per_view(probs: torch.Tensor, seq, grids, prefill: int) -> list[torch.Tensor] | None:
    """Cache-column attention [S] -> per view [N_v] raster vectors (0 for pruned tokens).
    The layer's prefill cache holds either the pruned sequence or (layer before the pruning
    layer, or nothing pruned) the full one."""
    sizes = [r * c for r, c in grids]
    full = len(seq.alive) + sum(n - len(a) for n, a in zip(sizes, seq.view_alive))
    out = []
    for v, n in enumerate(sizes):
        vec = torch.zeros(n, dtype=torch.float32)
        if prefill == len(seq.alive):
            vec[seq.view_alive[v].cpu()] = probs[seq.view_seq_positions(v)].float().cpu()
        elif prefill == full:
            vec[:] = probs[seq.view_offsets[v]:seq.view_offsets[v] + n].float().cpu()
        else:
            return None
        out.append(vec)
    return out
