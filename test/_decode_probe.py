"""Run the engine's decode loop and keep the logits it chose each token from."""

from __future__ import annotations

from unittest import mock

import torch

from fastdrivevla_ros.pruning.base import FrameExtras
from fastdrivevla_ros.vla.constrained import _Matcher
from fastdrivevla_ros.vla.engine import _Stopwatch


def decode_with_logits(engine, inputs):
    """
    Return (tokens, decode record, logits of every lm_head call [calls, V], kept indices).

    For unconstrained decoding: under the grammar a choice reads only the allowed ids' rows of
    the LM head (see decode_with_choices).
    """
    seen = []
    handle = engine.model.lm_head.register_forward_hook(
        lambda mod, args, out: seen.append(out.detach().reshape(-1, out.shape[-1])[-1].clone()))
    try:
        tokens, seq, record = engine.generate_tokens(inputs, _Stopwatch(engine.device), {})
    finally:
        handle.remove()
    return tokens, record, torch.stack(seen), seq.alive


def decode_with_choices(engine, inputs, draft=None):
    """
    Return (tokens, record, choices, kept indices) of a grammar-constrained decode.

    choices: per free token, (the ids the grammar allowed, their logits), as the engine chose.
    """
    seen = []
    original = _Matcher.choose

    def choose(ids, logits):
        seen.append((ids.clone(), logits.detach().float().clone()))
        return original(ids, logits)

    with mock.patch.object(_Matcher, "choose", staticmethod(choose)):
        tokens, seq, record = engine.generate_tokens(inputs, _Stopwatch(engine.device),
                                                     FrameExtras(), draft)
    return tokens, record, seen, seq.alive


def at_allowed_ids(choices, full_logits):
    """The reference's full rows [F, V] read at the ids of our F choices."""
    return [(ids, row[ids].float()) for (ids, _), row in zip(choices, full_logits)]


def assert_same_choices(ours, theirs, **tol):
    """The same allowed ids at every choice, and logits within `tol`."""
    assert len(ours) == len(theirs)
    assert torch.equal(torch.cat([i for i, _ in ours]), torch.cat([i for i, _ in theirs]))
    torch.testing.assert_close(torch.cat([v for _, v in ours]), torch.cat([v for _, v in theirs]),
                               **tol)


def reference_embeddings_and_positions(model, inputs):
    """
    Return E [L, D] and P [3, L] built from transformers alone (no engine code).

    E: text embeddings with the image features in the image slots; P: get_rope_index's
    original 3D M-RoPE positions.
    """
    m = model.model
    features = m.get_image_features(inputs.pixel_values, inputs.image_grid_thw).pooler_output
    ids = inputs.input_ids[0]
    embeds = m.language_model.embed_tokens(ids).clone()
    embeds[ids == model.config.image_token_id] = torch.cat(list(features))
    pos, _ = m.get_rope_index(inputs.input_ids, mm_token_type_ids=inputs.mm_token_type_ids,
                              image_grid_thw=inputs.image_grid_thw,
                              attention_mask=inputs.attention_mask)
    return embeds, pos[:, 0]


def compiled_grammar(tiny_vla):
    """Compile the planning grammar with xgrammar directly (not the engine's matcher)."""
    import pytest

    from fastdrivevla_ros.vla.constrained import planning_grammar

    xgr = pytest.importorskip("xgrammar")
    model, tok, _ = tiny_vla
    info = xgr.TokenizerInfo.from_huggingface(
        tok, vocab_size=model.config.text_config.vocab_size,
        stop_token_ids=[tok.convert_tokens_to_ids("<|im_end|>"),
                        tok.convert_tokens_to_ids("<|endoftext|>")])
    return xgr, xgr.GrammarCompiler(info).compile_grammar(planning_grammar())


def reference_free_choices(model, inputs, keep, tokens, grammar):
    """
    Run transformers' language model on the kept embeddings at their original positions.

    Then feed the emitted tokens one per step; return, at each token, the grammar-masked
    argmax and the logits.
    """
    from transformers import DynamicCache

    xgr, compiled = grammar
    embeds, pos = reference_embeddings_and_positions(model, inputs)
    cache = DynamicCache(config=model.config.text_config)
    lm = model.model.language_model
    out = lm(inputs_embeds=embeds[keep][None], position_ids=pos[:, None, keep], cache=cache,
             use_cache=True)
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, model.config.text_config.vocab_size)
    choices, logits = [], []
    for t, token in enumerate(tokens):
        row = model.lm_head(out.last_hidden_state[0, -1:]).float()
        logits.append(row[0].clone())
        matcher.fill_next_token_bitmask(bitmask)
        xgr.apply_token_bitmask_inplace(row, bitmask)
        choices.append(int(torch.argmax(row)))
        assert matcher.accept_token(token)
        out = lm(inputs_embeds=lm.embed_tokens(torch.tensor([[token]])),
                 position_ids=torch.full((3, 1, 1), int(pos.max()) + 1 + t), cache=cache,
                 use_cache=True)
    return choices, torch.stack(logits)
