"""Forced tokens: what the planning grammar fixes rides along with free choices, exactly."""

import numpy as np
import pytest
import torch

from _decode_probe import assert_same_choices, at_allowed_ids, compiled_grammar, \
    decode_with_choices, reference_free_choices
from fastdrivevla_ros.pruning.registry import build_pruner
from fastdrivevla_ros.vla.prompt import CAMERAS, PLANNING_HEADER, EgoHistory, EgoState

HISTORY = EgoHistory([EgoState(-2.0, 0.1, 4.0, (0.2, 0.0), 0.01), EgoState(0.0, 0.0, 4.1)])
TOL = dict(atol=2e-4, rtol=1e-4)
PRUNERS = [("none", {}, 0.0), ("random", {"seed": 1}, 0.5), ("fastv", {"layer": 2}, 0.5)]


def _setup(engine, camera_images, views, pruner="none", options=None, ratio=0.0):
    cams = CAMERAS[:views]
    engine.pruner = build_pruner(pruner, **(options or {}))
    engine.configure(cameras=cams, image_size=(112, 112), max_new_tokens=320, constrained=True,
                     pruning_ratio=ratio)
    return engine.prepare({c: camera_images[c] for c in cams}, HISTORY)


@pytest.mark.parametrize("pruner,options,ratio", PRUNERS)
@pytest.mark.parametrize("views", [1, 6])
def test_forced_runs_in_one_pass_equal_one_pass_per_token(engine, camera_images, views, pruner,
                                                          options, ratio):
    inputs = _setup(engine, camera_images, views, pruner, options, ratio)
    tokens, record, batched, _ = decode_with_choices(engine, inputs)
    engine.batch_forced = False
    engine.pruner = build_pruner(pruner, **options)       # the same selection again
    one_tokens, one_record, single, _ = decode_with_choices(engine, inputs)
    assert tokens == one_tokens and record.forced == one_record.forced
    assert one_record.passes > 2 * record.passes
    assert len(batched) == record.forced.count(False) >= 30
    assert_same_choices(batched, single, **TOL)


@pytest.fixture(scope="module")
def grammar(tiny_vla):
    """Compile the planning grammar with xgrammar directly (not the engine's matcher)."""
    return compiled_grammar(tiny_vla)


@pytest.mark.parametrize("views,pruner,options,ratio", [(1, "none", {}, 0.0),
                                                        (6, "none", {}, 0.0),
                                                        (6, "random", {"seed": 1}, 0.5)])
def test_free_choices_match_an_independent_reference_under_the_grammar(
        engine, camera_images, grammar, views, pruner, options, ratio):
    inputs = _setup(engine, camera_images, views, pruner, options, ratio)
    tokens, record, ours, keep = decode_with_choices(engine, inputs)
    with torch.no_grad():
        choices, ref_logits = reference_free_choices(engine.model, inputs, keep, tokens,
                                                      grammar)
    free = [j for j, f in enumerate(record.forced) if not f]
    assert [tokens[j] for j in free] == [choices[j] for j in free]
    assert_same_choices(ours, at_allowed_ids(ours, ref_logits[free]), **TOL)


def test_forced_strings_use_the_canonical_tokenization(engine, camera_images):
    tok = engine.tokenizer
    tokens, record, _, _ = decode_with_choices(engine, _setup(engine, camera_images, 1))
    head = record.forced.index(False)
    assert tokens[:head] == tok("<PLANNING>" + PLANNING_HEADER)["input_ids"][:head]
    assert tok.decode(tokens[:head]).endswith("[x, y]:")     # " [" waits for the sign
    tail = tok("]</PLANNING>")["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    assert tokens[-len(tail):] == tail and all(record.forced[-len(tail):])


def test_six_view_plan_costs_at_most_half_a_pass_per_emitted_token(engine, camera_images):
    _setup(engine, camera_images, 6)
    result = engine.plan(camera_images, HISTORY)
    assert result.ok and result.waypoints.shape == (6, 2)
    assert result.decode_passes <= 0.5 * result.num_generated
    assert result.to_json()["decode_passes"] == result.decode_passes


def test_forced_tokens_off_decodes_step_by_step(engine, camera_images):
    inputs = _setup(engine, camera_images, 1)
    engine.configure(forced_tokens=False)
    tokens, record, choices, _ = decode_with_choices(engine, inputs)
    assert not any(record.forced) and record.passes == len(tokens) - 1
    assert len(choices) == len(tokens)              # prefill + one pass per token but the last
    result = engine.plan({"CAM_FRONT": camera_images["CAM_FRONT"]}, HISTORY)
    assert result.ok and result.decode_passes == result.num_generated - 1
    assert np.isfinite(result.waypoints).all()


@pytest.mark.parametrize("views,pruner,options,ratio", [(1, "none", {}, 0.0),
                                                        (6, "fastv", {"layer": 2}, 0.5)])
def test_static_decode_step_gives_the_same_tokens_and_logits(engine, camera_images, views,
                                                             pruner, options, ratio):
    """
    Decode on a pre-allocated KV cache with fixed shapes: the same reply and logits.

    This is the step decode_step='compiled' compiles. After FastV-style pruning the layers'
    caches hold different lengths.
    """
    inputs = _setup(engine, camera_images, views, pruner, options, ratio)
    tokens, record, choices, _ = decode_with_choices(engine, inputs)
    engine.configure(decode_step="static")
    engine.pruner = build_pruner(pruner, **options)
    for _ in range(2):          # the second plan reuses the pre-allocated cache
        static_tokens, static_record, static_choices, _ = decode_with_choices(engine, inputs)
        assert static_tokens == tokens and static_record.passes == record.passes
        assert_same_choices(static_choices, choices, **TOL)


def test_allowed_ids_are_the_tokens_xgrammar_leaves_unmasked(engine, camera_images, grammar):
    """At every step of a reply: the ids a choice is made over = xgrammar's own masking."""
    xgr, compiled = grammar
    tokens, _, _, _ = decode_with_choices(engine, _setup(engine, camera_images, 1))
    ours, theirs = engine._constraint_matcher(), xgr.GrammarMatcher(compiled)
    vocab = engine.model.config.text_config.vocab_size
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    for token in tokens[:-1]:
        row = torch.zeros(1, vocab)
        theirs.fill_next_token_bitmask(bitmask)
        xgr.apply_token_bitmask_inplace(row, bitmask)
        expected = torch.isfinite(row[0]).nonzero().flatten()
        assert torch.equal(ours.allowed_ids(torch.device("cpu")), expected)
        ours.accept(token)
        assert theirs.accept_token(token)
