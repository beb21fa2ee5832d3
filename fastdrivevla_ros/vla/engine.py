"""DrivingVLA: camera images + ego history -> PlanResult, with any pruner at any ratio.

Inference (shared/reference/algorithms.md §3, "version-proof recipe"):
  1. vision encoder + merger -> N visual tokens per view;
  2. transformers' own get_rope_index -> 3D M-RoPE positions of the FULL sequence;
  3. the decoder layers run here, one by one, so a pruner can drop visual tokens at the input of
     any layer K (K = 0: before the LLM). Kept tokens keep their ORIGINAL positions; layers before
     K keep their full KV cache (the FastV semantics);
  4. greedy KV-cached decode at positions max(original positions) + 1 + t.
With nothing pruned this is exactly transformers' forward/generate (tested).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from fastdrivevla_ros.compat import cached_key_values, crop_cache, static_layer_fill
from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.pruning.base import DecodeRecord, FrameExtras, PruneContext, Pruner, \
    ViewTokens, view_budgets
from fastdrivevla_ros.pruning.registry import build_pruner
from fastdrivevla_ros.vla.draft import draft_continuation, kinematic_draft
from fastdrivevla_ros.vla.inputs import ModelInputs, prepare_inputs
from fastdrivevla_ros.vla.parsing import parse_planning
from fastdrivevla_ros.vla.prompt import EgoHistory
from fastdrivevla_ros.vla.result import PlanResult, ViewResult
from fastdrivevla_ros.vla.settings import check_setting, DEFAULTS

#: lengths a decode pass on the StaticCache is padded to (decode_step static / compiled): a
#: compiled step then meets five shapes, each captured once as a CUDA graph
PASS_LENGTHS = (1, 4, 16, 64, 256)


@dataclass
class PlannerSettings:
    """What the node's parameters and the CLI's flags configure (validated in __post_init__).

    Defaults come from the settings schema (vla/settings.py), as the node's and the CLI's do."""

    cameras: tuple[str, ...] = DEFAULTS["cameras"]
    max_pixels: int = DEFAULTS["max_pixels"]       # Impromptu-VLA's image_resolution
    image_size: tuple[int, int] | None = None      # fixed (w, h), e.g. (1596, 1596): 3,249 tokens
    pruning_ratio: float = DEFAULTS["pruning_ratio"]
    view_ratios: tuple[float, ...] | None = DEFAULTS["view_ratios"]   # per-view (Prune2Drive)
    max_new_tokens: int = DEFAULTS["max_new_tokens"]
    constrained: bool = DEFAULTS["constrained"]
    forced_tokens: bool = DEFAULTS["forced_tokens"]  # with `constrained`: fixed tokens ride along
    #: "dynamic": growing KV cache, eager; "static": pre-allocated KV cache (StaticCache), fixed
    #: shapes; "compiled": static + the one-token step under torch.compile (CUDA graphs on GPU)
    decode_step: str = DEFAULTS["decode_step"]
    #: waypoints guessed and verified in one pass (speculative decoding; same reply):
    #: "none", "kinematic" (ego history) or "previous" (the caller's last plan, moved)
    draft: str = DEFAULTS["draft"]

    def __post_init__(self):
        """Each value checked by its schema entry, exactly as the node and the CLI check it."""
        for name in ("cameras", "max_pixels", "pruning_ratio", "view_ratios", "max_new_tokens",
                     "constrained", "forced_tokens", "decode_step", "draft"):
            setattr(self, name, check_setting(name, getattr(self, name)))
        if self.image_size is not None:
            self.image_size = tuple(check_setting(k, int(v)) for k, v in
                                    zip(("image_width", "image_height"), self.image_size))
            if len(self.image_size) != 2 or min(self.image_size) < 28:
                raise ConfigError(f"image_size must be (w, h), each >= 28, got {self.image_size}")
        if self.view_ratios is not None and len(self.view_ratios) != len(self.cameras):
            raise ConfigError(f"{len(self.view_ratios)} view ratios for "
                              f"{len(self.cameras)} cameras")


class _Stopwatch:
    """Accumulates wall-clock ms per stage; synchronises CUDA so GPU time is counted."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        if self.cuda:
            torch.cuda.synchronize(self.device)   # the engine's GPU, also on cuda:N
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize(self.device)
            self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - t0) * 1e3


@dataclass
class _Sequence:
    """The LLM sequence as it shrinks: hidden [L, D], original positions [3, L], which
    original sequence indices are alive [L], and per view the alive raster indices."""

    hidden: torch.Tensor
    positions: torch.Tensor
    alive: torch.Tensor
    view_alive: list[torch.Tensor]
    view_offsets: list[int]          # original sequence index of each view's first token
    scores: list[torch.Tensor | None] = field(default_factory=list)

    def view_seq_positions(self, v: int) -> torch.Tensor:
        """Where view v's alive tokens sit in the CURRENT sequence."""
        orig = self.view_alive[v] + self.view_offsets[v]
        return torch.searchsorted(self.alive, orig)


class DrivingVLA:
    def __init__(self, model, tokenizer, image_processor, settings: PlannerSettings | None = None,
                 pruner: Pruner | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.settings = settings or PlannerSettings()
        self.pruner = pruner or build_pruner("none")
        text = model.model.language_model
        self.layers, self.norm, self.rotary = text.layers, text.norm, text.rotary_emb
        self.embed = text.embed_tokens
        self.text_config = model.config.text_config
        ids = tokenizer.convert_tokens_to_ids
        self.stop_ids = sorted({ids("<|im_end|>"), ids("<|endoftext|>"),
                                *_as_list(model.generation_config.eos_token_id)})
        self._constraint = None
        self.batch_forced = True   # False: feed forced tokens one pass each (exactness tests)
        self._static = None        # (StaticCache, compiled step or None), reused across plans

    @classmethod
    def from_pretrained(cls, path_or_repo_id, *, dtype: str = "float32", device: str = "cpu",
                        attn_implementation: str = "sdpa", pruner: str | Pruner = "none",
                        pruner_options: dict | None = None, **settings) -> "DrivingVLA":
        from fastdrivevla_ros.pruning.registry import check_pruner
        from fastdrivevla_ros.vla.loading import load_vla

        planner_settings = PlannerSettings(**settings)     # bad settings fail before loading
        if isinstance(pruner, str):
            check_pruner(pruner, pruner_options)
        model, tokenizer, image_processor = load_vla(path_or_repo_id, dtype, device,
                                                     attn_implementation)
        if isinstance(pruner, str):
            pruner = build_pruner(pruner, **(pruner_options or {}))
        return cls(model, tokenizer, image_processor, planner_settings, pruner)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def pruner(self) -> Pruner:
        return self._pruner

    @pruner.setter
    def pruner(self, pruner: Pruner) -> None:
        """Take `pruner`, fitted to this model once (its depth), here rather than per frame."""
        pruner.fit(self.model)
        self._pruner = pruner

    def configure(self, **changes) -> None:
        """Change settings (validated); e.g. configure(pruning_ratio=0.5) at runtime."""
        self.settings = replace(self.settings, **changes)

    # ------------------------------------------------------------------ public API
    def prepare(self, images: dict, history: EgoHistory | None = None) -> ModelInputs:
        return prepare_inputs(self.tokenizer, self.image_processor, list(self.settings.cameras),
                              images, history or EgoHistory.stationary(), self.settings.max_pixels,
                              self.settings.image_size, self.device)

    @torch.inference_mode()
    def plan(self, images: dict, history: EgoHistory | None = None,
             extras: FrameExtras | dict | None = None,
             draft: np.ndarray | str | None = None) -> PlanResult:
        """images: {camera: HxWx3 uint8 RGB, PIL image or JPEG/PNG bytes}; history: past ego
        states (None = standing still); extras: side data for pruners (e.g.
        {'foreground_masks': {camera: HxW}}); draft: [6, 2] guessed waypoints to verify, or a
        reply text (None: the `draft` setting's guess; `previous` needs the caller's, see
        vla/draft.py, and falls back to kinematic). The reply is the same whatever the draft."""
        start = time.perf_counter()
        clock = _Stopwatch(self.device)
        extras = FrameExtras.of(extras)                  # our copy: the caller's stays as given
        with clock("preprocess"):
            inputs = self.prepare(images, history)
        if draft is None and self.settings.draft != "none":
            draft = kinematic_draft(history)
        tokens, seq, record = self.generate_tokens(inputs, clock, extras, draft)
        with clock("parse"):                             # detokenise + read the waypoints
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            waypoints, status, reason = parse_planning(text)
        if self.pruner.record_decode_layers:
            with clock("observe"):                       # VLA-Pruner's extra attention pass
                self.pruner.observe(record)
        clock.ms["total"] = (time.perf_counter() - start) * 1e3   # the plan's wall time
        views = [ViewResult(camera=cam, grid=grid, kept=seq.view_alive[v].cpu().numpy(),
                            scores=_raster_scores(seq.scores, v), image=inputs.resized[v])
                 for v, (cam, grid) in enumerate(zip(self.settings.cameras, inputs.grids))]
        return PlanResult(waypoints=waypoints, status=status, reason=reason, text=text,
                          views=views, pruner=self.pruner.name,
                          pruning_ratio=0.0 if self.pruner.keeps_all else self.settings.pruning_ratio,
                          timings_ms=clock.ms, num_generated=len(tokens),
                          decode_passes=record.passes, draft_tokens=record.draft_tokens,
                          accepted_tokens=record.accepted_tokens,
                          view_ratios=self.settings.view_ratios)

    def warmup(self, plans: int = 1, size: tuple[int, int] = (1600, 900)) -> float:
        """Plan `plans` times on a blank camera set; return the seconds it took.

        The first plan of a process pays one-off costs (grammar compilation for the whole
        vocabulary, first allocations, the compiled decode step's compilation); after a warm-up
        the first real plan costs what the others cost. Black `size` (w, h) frames (nuScenes'
        by default, so the token grid is a real frame's), standing still, empty foreground
        masks; the pruner is reset afterwards, so warmed-up plans equal cold ones."""
        if plans <= 0:
            return 0.0
        w, h = size
        blank = {cam: np.zeros((h, w, 3), np.uint8) for cam in self.settings.cameras}
        masks = {cam: np.zeros((h, w), bool) for cam in self.settings.cameras}
        start = time.perf_counter()
        for _ in range(plans):
            self.plan(blank, extras={"foreground_masks": masks})
        self._warm_pass_lengths()
        self.pruner.reset()
        return time.perf_counter() - start

    @torch.inference_mode()
    def _warm_pass_lengths(self) -> None:
        """Run the compiled decode step twice at every pass length (compiled, then captured as
        a CUDA graph): a blank plan meets only some lengths, a draft's verification the longer
        ones. Dummy tokens, cropped from the cache at once; the next plan resets it anyway."""
        if self._static is None or self._static[1] is None:
            return
        cache = self._static[0]
        for length in PASS_LENGTHS * 2:
            self._static_feed([0] * length, 0, cache)
            crop_cache(cache, length)

    # ------------------------------------------------------------------ stages
    def encode_images(self, inputs: ModelInputs, extras: FrameExtras) -> list[torch.Tensor]:
        """Vision encoder + merger -> per view [N_v, D] LLM-space visual tokens."""
        visual = self.model.model.visual
        pixel_values = inputs.pixel_values.to(self.device, visual.dtype)
        grid = inputs.image_grid_thw.to(self.device)
        with self.pruner.vision_hooks(self.model) as hook_data:
            out = self.model.model.get_image_features(pixel_values, grid)
        if hook_data is not None:
            extras.vision = hook_data
        return list(out.pooler_output)

    def rope_positions(self, inputs: ModelInputs) -> torch.Tensor:
        """[3, L] original M-RoPE positions, from transformers' own get_rope_index."""
        pos, _ = self.model.model.get_rope_index(
            inputs.input_ids.to(self.device),
            mm_token_type_ids=inputs.mm_token_type_ids.to(self.device),
            image_grid_thw=inputs.image_grid_thw.to(self.device),
            attention_mask=inputs.attention_mask.to(self.device))
        return pos[:, 0]

    def generate_tokens(self, inputs: ModelInputs, clock: _Stopwatch, extras: FrameExtras,
                        draft: np.ndarray | None = None):
        """Vision, pruning, prefill and greedy decode (draft: [6, 2] waypoints to verify).
        Returns (token ids, final sequence, record for temporal pruners)."""
        with clock("vision"):
            features = self.encode_images(inputs, extras)
        input_ids = inputs.input_ids[0].to(self.device)
        positions = self.rope_positions(inputs)
        embeds = self.embed(input_ids)
        image_slots = torch.nonzero(inputs.mm_token_type_ids[0] == 1).flatten().to(self.device)
        embeds[image_slots] = torch.cat(features).to(embeds.dtype)
        totals = [f.shape[0] for f in features]
        offsets = image_slots[np.cumsum([0] + totals[:-1])].tolist()
        seq = _Sequence(embeds, positions, torch.arange(len(input_ids), device=self.device),
                        [torch.arange(n, device=self.device) for n in totals], offsets)
        budgets = view_budgets(totals, self.settings.pruning_ratio,
                               list(self.settings.view_ratios) if self.settings.view_ratios else None)
        stages = {}
        if not self.pruner.keeps_all and any(b < n for b, n in zip(budgets, totals)):
            stages = dict(zip(self.pruner.layers, self.pruner.stage_budgets(budgets, totals)))
        cache = self._new_cache()
        hidden = self.prefill(seq, stages, cache, clock, input_ids, embeds, inputs, extras)
        with clock("decode"):
            cache = self._decode_cache(cache)
            tokens, record = self.decode(hidden, int(positions.max()) + 1, cache, draft)
        record.sequence, record.extras, record.model = seq, extras, self.model
        record.cameras, record.grids = self.settings.cameras, inputs.grids
        return tokens, seq, record

    def prefill(self, seq: _Sequence, stages: dict, cache, clock: _Stopwatch,
                input_ids: torch.Tensor, embeds0: torch.Tensor, inputs: ModelInputs,
                extras: FrameExtras) -> torch.Tensor:
        """Run every decoder layer over the (shrinking) sequence; returns the last token's
        normed hidden state [1, D] (its logits are computed only if a choice needs them)."""
        bad = [k for k in stages if not 0 <= k < len(self.layers)]
        if bad:
            raise ConfigError(f"pruner {self.pruner.name} prunes at layer(s) {bad}; the model "
                              f"has {len(self.layers)} layers")
        layer_input = None
        pe = mask = None
        for i, layer in enumerate(self.layers):
            if i in stages:
                with clock("scoring"):
                    ctx = self._context(i, seq, input_ids, embeds0, inputs, extras, layer_input,
                                        pe)
                    self._apply_selection(seq, ctx, stages[i])
                pe = None
            with clock("prefill"):
                if pe is None:   # (re)build rotary embeddings and causal mask for this length
                    pe, mask = self._rope_and_mask(seq)
                layer_input = seq.hidden
                seq.hidden = layer(seq.hidden[None], attention_mask=mask, position_embeddings=pe,
                                   cache=cache, use_cache=True)[0]
        with clock("prefill"):
            return self.norm(seq.hidden[-1:])

    def decode(self, hidden: torch.Tensor, first_position: int, cache,
               draft: np.ndarray | None = None):
        """Greedy decode from the prefill's last normed hidden state [1, D]; reply token j sits
        at position first_position + j (all three M-RoPE rows). With constrained decoding and
        `forced_tokens`, what the grammar fixes is not decoded: the header is fed in one pass,
        and each later forced run rides along with the free token before it, so only free
        choices cost a pass.

        draft: [6, 2] guessed waypoints (None: none). Its reply text, from where the reply
        stands, rides along too; the walk below takes each choice from the row the non-draft
        loop would have used, so the reply is the same for any draft, and the draft tokens past
        the first disagreement are cropped from the cache."""
        matcher = self._constraint_matcher()
        forcing = matcher is not None and self.settings.forced_tokens
        limit = self.settings.max_new_tokens
        tokens: list[int] = []
        forced: list[bool] = []
        recorded = {i: [] for i in self.pruner.record_decode_layers}
        passes = drafted = accepted = 0
        cautious = False            # after a rejection: draft up to the next number boundary
        splits: dict[int, list[int]] = {}   # draft token -> how this reply writes its text
        reply = _ReplyText(self.tokenizer)

        def emit(ids: list[int], is_forced: bool) -> None:
            for token in ids:
                tokens.append(token)
                forced.append(is_forced)
                if matcher is not None:
                    matcher.accept(token)

        def stopped() -> bool:
            return (len(tokens) >= limit or tokens[-1] in self.stop_ids
                    or (matcher is not None and matcher.finished))

        pending: list[int] = []     # emitted, not yet in the cache
        rows = _HeadRows(self.model.lm_head, hidden)
        if forcing:
            emit(matcher.forced()[:limit], True)      # <PLANNING> + header
            pending = list(tokens)
        while not (tokens and stopped()):
            guess = []
            if pending:   # one pass: pending tokens + the draft's continuation of them
                guess = self._draft_ids(draft, tokens, reply, matcher, limit, cautious,
                                        splits)
                rows, n = self._feed(pending + guess, first_position + len(tokens) - len(pending),
                                     cache, recorded, rows=len(guess) + 1)
                passes += n
            used = 0        # draft tokens the reply has kept (in the cache and emitted)
            while True:
                fresh = [rows.choose(used, matcher)]
                emit(fresh, False)
                if forcing and not stopped():
                    run = matcher.forced()[:limit - len(tokens)]
                    emit(run, True)
                    fresh += run
                k = _common_prefix(fresh, guess[used:])
                used += k
                if stopped() or k < len(fresh):
                    pending = fresh[k:]
                    break
            drafted, accepted = drafted + len(guess), accepted + used
            if used < len(guess) and not stopped():
                # the same text split otherwise (' [' written ' ', '['): not a wrong guess
                split = self._split(guess[used], fresh[k])
                splits.update({guess[used]: split} if split else {})
                cautious = cautious or not split
            elif guess:
                cautious = False
            self._drop_rejected(cache, recorded, len(guess) - used)
        record = DecodeRecord(tokens, forced, passes, cache=cache, decode_inputs={
            i: torch.cat(v) if v else None for i, v in recorded.items()},
            draft_tokens=drafted, accepted_tokens=accepted)
        return tokens, record

    def _draft_ids(self, draft, tokens: list[int], reply: "_ReplyText", matcher, limit: int,
                   cautious: bool, splits: dict[int, list[int]]) -> list[int]:
        """The draft's canonical token ids from where the reply stands (a token this reply has
        written as a split replaced by that split), cut where the grammar or the token budget
        would stop them ([] without a draft)."""
        if draft is None:
            return []
        text = draft_continuation(reply(tokens), draft, one_number=cautious)
        if not text:
            return []
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = [t for i in ids for t in splits.get(i, (i,))]
        ids = ids[:max(0, limit - len(tokens) - 1)]   # the last budgeted token is never fed
        return ids[:matcher.grammatical_prefix(ids)] if matcher is not None else ids

    def _split(self, drafted: int, written: int) -> list[int] | None:
        """[written, canonical rest] when the reply wrote the start of the drafted token's text
        as a shorter token, else None."""
        text, start = self.tokenizer.decode([drafted]), self.tokenizer.decode([written])
        if not start or len(start) >= len(text) or not text.startswith(start):
            return None
        return [written] + self.tokenizer(text[len(start):], add_special_tokens=False)["input_ids"]

    @staticmethod
    def _drop_rejected(cache, recorded: dict, n: int) -> None:
        """Forget the last n fed tokens: their keys/values and recorded layer inputs."""
        if n <= 0:
            return
        crop_cache(cache, n)
        for inputs in recorded.values():
            drop = n
            while drop > 0:
                last = inputs.pop()
                if len(last) > drop:
                    inputs.append(last[:len(last) - drop])
                drop -= len(last)

    def _feed(self, ids: list[int], start: int, cache, recorded: dict, rows: int = 1):
        """Run reply tokens `ids` (positions start, start+1, ...) through every layer on the
        KV cache, one pass for all of them. Returns (the last `rows` rows as _HeadRows,
        passes)."""
        if len(ids) > 1 and not self.batch_forced:
            # same tokens, one pass each (tests compare the two)
            out = [self._feed(ids[k:k + 1], start + k, cache, recorded)[0].hidden
                   for k in range(len(ids))]
            return _HeadRows(self.model.lm_head, torch.cat(out)[len(ids) - rows:]), len(ids)
        if self._static is not None and cache is self._static[0]:
            hidden, passes = self._static_feed(ids, start, cache)
            return _HeadRows(self.model.lm_head, hidden[len(ids) - rows:]), passes
        n = len(ids)
        token = torch.tensor([ids], device=self.device)
        pos = (start + torch.arange(n, device=self.device)).view(1, 1, n).expand(3, 1, n)
        h = self.embed(token)
        pe = self.rotary(h, pos)
        masks: dict[int, torch.Tensor | None] = {}
        for i, layer in enumerate(self.layers):
            if i in recorded:
                recorded[i].append(h[0])
            # after layer-K pruning the layers' cache lengths differ: one mask per length
            past = cache.get_seq_length(i)
            if past not in masks:
                masks[past] = self._decode_mask(past, n, h.dtype)
            h = layer(h, attention_mask=masks[past], position_embeddings=pe,
                      cache=cache, use_cache=True)
        return _HeadRows(self.model.lm_head, self.norm(h[0, -rows:])), 1

    # ------------------------------------------------------------------ static decode step
    def _static_feed(self, ids: list[int], start: int, cache) -> tuple[torch.Tensor, int]:
        """`ids` through the StaticCache in passes of the fixed lengths PASS_LENGTHS, so a
        compiled step meets a handful of shapes (one CUDA graph each): a pass is padded to the
        next length (the padding comes after every real token, so causally no real row sees
        it, and its keys/values are cropped at once); a run longer than the longest length goes
        in several passes. Returns (normed hidden [len(ids), D], passes)."""
        step = self._static[1] or self._static_pass
        longest = PASS_LENGTHS[-1]
        out = []
        for at in range(0, len(ids), longest):
            chunk = ids[at:at + longest]
            n = len(chunk)
            size = next(length for length in PASS_LENGTHS if length >= n)
            token = torch.tensor([chunk + chunk[-1:] * (size - n)], device=self.device)
            pos = (start + at + torch.arange(size, device=self.device)).view(1, 1, size)
            # cloned: a CUDA graph's output is overwritten by its next replay
            out.append(step(token, pos.expand(3, 1, size), cache)[:n].clone())
            crop_cache(cache, size - n)
        return torch.cat(out), len(out)

    def _decode_cache(self, cache):
        """The prefill's DynamicCache, or (decode_step static/compiled) a pre-allocated
        StaticCache holding the same keys/values, reused across plans so a compiled step sees
        the same buffers. Pruners that record decode inputs (VLA-Pruner) keep the dynamic one."""
        mode = self.settings.decode_step
        if mode == "dynamic" or self.pruner.record_decode_layers:
            return cache
        from transformers import StaticCache

        kv = [cached_key_values(cache, i) for i in range(len(self.layers))]
        # + room for the padding of the last pass
        need = max(k.shape[-2] for k, _ in kv) + self.settings.max_new_tokens + PASS_LENGTHS[-1]
        if (self._static is None or static_layer_fill(self._static[0], 0)[1] < need
                or (self._static[1] is not None) != (mode == "compiled")):
            static = StaticCache(config=self.text_config, max_cache_len=need)
            step = None
            if mode == "compiled":   # one graph per pass length, no dynamic-shape graph
                step = torch.compile(self._static_pass, fullgraph=False, dynamic=False, mode=(
                    "reduce-overhead" if self.device.type == "cuda" else None))
            self._static = (static, step)
        static = self._static[0]
        static.reset()
        for i, (k, v) in enumerate(kv):
            static.update(k, v, i)
        return static

    def _static_pass(self, token: torch.Tensor, pos: torch.Tensor, cache) -> torch.Tensor:
        """token [1, n], pos [3, 1, n] -> normed hidden states [n, D], on the StaticCache:
        fixed shapes, the valid length of each layer read from its own length tensor (no host
        sync). The LM head stays outside: a choice needs only the rows of the ids the grammar
        allows."""
        h = self.embed(token)
        pe = self.rotary(h, pos)
        n = token.shape[1]
        for i, layer in enumerate(self.layers):
            before, capacity = static_layer_fill(cache, i)
            keys = torch.arange(capacity, device=h.device)
            allowed = keys[None, :] <= before + torch.arange(n, device=h.device)[:, None]
            mask = torch.zeros(allowed.shape, dtype=h.dtype, device=h.device).masked_fill(
                ~allowed, torch.finfo(h.dtype).min)[None, None]
            h = layer(h, attention_mask=mask, position_embeddings=pe, cache=cache,
                      use_cache=True)
        return self.norm(h[0])

    def _decode_mask(self, past: int, n: int, dtype: torch.dtype) -> torch.Tensor | None:
        """[1, 1, n, past + n] additive causal mask for n new tokens after `past` cached ones;
        None for one token (it sees the whole cache) and for FlashAttention (causal itself,
        aligned bottom-right)."""
        if n == 1 or self.text_config._attn_implementation == "flash_attention_2":
            return None
        keys = torch.arange(past + n, device=self.device)
        allowed = keys[None, :] <= past + torch.arange(n, device=self.device)[:, None]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=self.device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]

    # ------------------------------------------------------------------ helpers
    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.text_config)

    def _rope_and_mask(self, seq: _Sequence):
        from transformers.masking_utils import create_causal_mask

        h = seq.hidden[None]
        pe = self.rotary(h, seq.positions[:, None, :])
        mask = create_causal_mask(config=self.text_config, inputs_embeds=h,
                                  attention_mask=torch.ones(h.shape[:2], dtype=torch.long,
                                                            device=h.device),
                                  cache=None)
        return pe, mask

    def _context(self, layer: int, seq: _Sequence, input_ids, embeds0, inputs, extras,
                 layer_input, pe) -> PruneContext:
        views = []
        for v, cam in enumerate(self.settings.cameras):
            sp = seq.view_seq_positions(v)
            views.append(ViewTokens(
                camera=cam, grid=inputs.grids[v], indices=seq.view_alive[v],
                features=seq.hidden[sp], embeddings=embeds0[seq.alive[sp]], seq_positions=sp,
                image=inputs.resized[v]))
        attention = None
        if layer > 0:
            attention = _AttentionRows(self.layers[layer - 1], layer_input, pe)
        return PruneContext(layer=layer, views=views, hidden=seq.hidden,
                            position_ids=seq.positions, input_ids=input_ids[seq.alive],
                            model=self.model, attention=attention, extras=extras)

    def _apply_selection(self, seq: _Sequence, ctx: PruneContext, budgets: list[int]) -> None:
        selection = self.pruner.select(ctx, budgets)
        keep = torch.ones(len(seq.alive), dtype=torch.bool, device=seq.alive.device)
        for v, (view, kept, k) in enumerate(zip(ctx.views, selection.kept, budgets)):
            kept = kept.to(view.indices.device)
            _check_selection(self.pruner.name, view, kept, k)
            keep[view.seq_positions[~torch.isin(view.indices, kept)]] = False
            if len(seq.scores) <= v:
                seq.scores.append(_scatter(selection.scores[v], view.indices, view.num_tokens))
            seq.view_alive[v] = kept
        seq.hidden, seq.positions, seq.alive = (seq.hidden[keep], seq.positions[:, keep],
                                                seq.alive[keep])

    def _constraint_matcher(self):
        if not self.settings.constrained:
            return None
        if self._constraint is None:
            from fastdrivevla_ros.vla.constrained import PlanningConstraint

            self._constraint = PlanningConstraint(
                self.tokenizer, self.model.lm_head.out_features, self.stop_ids)
        return self._constraint.start()


class _HeadRows:
    """Normed hidden rows [n, D] of one pass and, on demand, each row's greedy choice.

    Under the grammar a choice reads the LM-head rows of the allowed ids only (a digit: ~12 of
    Qwen's 151,936; argmax over them is the masked argmax), so forced rows, and rows a
    rejected draft leaves unread, cost nothing, and a free choice costs ~1/10,000 of the head.
    Without the grammar whole rows are computed, in doubling chunks (a draft rejected at its
    first token costs one row)."""

    def __init__(self, head, hidden: torch.Tensor):
        self.head, self.hidden, self.logits, self.chunk = head, hidden, {}, 1

    def choose(self, i: int, matcher) -> int:
        """The greedy token of row i (among the ids the grammar allows, with a matcher)."""
        h = self.hidden[i]
        if matcher is not None:
            ids = matcher.allowed_ids(h.device)
            bias = None if self.head.bias is None else self.head.bias[ids]
            return matcher.choose(ids, torch.nn.functional.linear(h, self.head.weight[ids], bias))
        if i not in self.logits:
            out = self.head(self.hidden[i:i + self.chunk])
            self.logits.update({i + j: row for j, row in enumerate(out)})
            self.chunk *= 2
        return int(torch.argmax(self.logits[i]))


class _ReplyText:
    """The reply's text as it grows, decoding only the tokens added since the last call (a
    whole-reply decode per pass was ~10 % of a plan's decode). It only shapes the draft, so a
    join that differed from a whole decode could cost speed, never change the reply."""

    def __init__(self, tokenizer):
        self.tokenizer, self.tokens, self.text = tokenizer, 0, ""

    def __call__(self, tokens: list[int]) -> str:
        self.text += self.tokenizer.decode(tokens[self.tokens:])
        self.tokens = len(tokens)
        return self.text


class _AttentionRows:
    """Softmax attention of one decoder layer for a few query rows, computed directly so the
    model itself can stay on SDPA / FlashAttention. Returns [heads, q, L]."""

    def __init__(self, layer, layer_input: torch.Tensor, pe):
        self.layer, self.x, self.pe = layer, layer_input, pe

    def __call__(self, query_positions: torch.Tensor) -> torch.Tensor:
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

        attn = self.layer.self_attn
        x = self.layer.input_layernorm(self.x[None])
        n, d = x.shape[1], attn.head_dim
        q = attn.q_proj(x[:, query_positions]).view(1, len(query_positions), -1, d).transpose(1, 2)
        k = attn.k_proj(x).view(1, n, -1, d).transpose(1, 2)
        cos, sin = self.pe
        q, _ = apply_rotary_pos_emb(q, q, cos[:, query_positions], sin[:, query_positions])
        _, k = apply_rotary_pos_emb(k, k, cos, sin)
        k = k.repeat_interleave(attn.num_key_value_groups, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() * attn.scaling
        causal = torch.arange(n, device=x.device)[None, :] > query_positions[:, None]
        scores = scores.masked_fill(causal, float("-inf"))
        return torch.softmax(scores, dim=-1)[0]


def _check_selection(name: str, view: ViewTokens, kept: torch.Tensor, k: int) -> None:
    """A pruner's selection must be exactly k sorted, unique, alive indices."""
    ok = (kept.ndim == 1 and len(kept) == k and bool(torch.all(kept[1:] > kept[:-1]))
          and bool(torch.isin(kept, view.indices).all()))
    if not ok:
        raise RuntimeError(f"pruner {name!r} returned an invalid selection for {view.camera}: "
                           f"{len(kept)} indices for a budget of {k} (must be sorted, unique, "
                           "among the alive tokens)")


def _scatter(scores, indices: torch.Tensor, n: int) -> torch.Tensor | None:
    if scores is None:
        return None
    out = torch.full((n,), float("nan"))
    out[indices.cpu()] = scores.detach().float().cpu()
    return out


def _raster_scores(all_scores: list, v: int) -> np.ndarray | None:
    if v >= len(all_scores) or all_scores[v] is None:
        return None
    return all_scores[v].numpy()


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _as_list(x) -> list[int]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [int(x)]
