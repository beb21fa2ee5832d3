"""Speculative waypoints: a draft verified in one pass leaves the reply exactly as without one."""

from _decode_probe import assert_same_choices, at_allowed_ids, compiled_grammar, \
    decode_with_choices, reference_free_choices
import numpy as np
import pytest
import torch

from fastdrivevla_ros.pruning.registry import build_pruner
from fastdrivevla_ros.vla import engine as engine_module
from fastdrivevla_ros.vla.draft import draft_continuation, kinematic_draft, previous_draft
from fastdrivevla_ros.vla.parsing import parse_planning
from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory, EgoState, format_planning, \
    PLANNING_HEADER

HISTORY = EgoHistory([EgoState(-2.0, 0.1, 4.0, (0.2, 0.0), 0.01), EgoState(0.0, 0.0, 4.1)])
TOL = dict(atol=2e-4, rtol=1e-4)
CONFIGS = [(1, 'none', {}, 0.0, 'dynamic'), (6, 'none', {}, 0.0, 'static'),
           (6, 'random', {'seed': 1}, 0.5, 'dynamic'), (1, 'random', {'seed': 1}, 0.5, 'static'),
           (6, 'fastv', {'layer': 2}, 0.5, 'static'), (1, 'fastv', {'layer': 2}, 0.5, 'dynamic')]


@pytest.fixture(scope='module')
def grammar(tiny_vla):
    """Compile the planning grammar with xgrammar directly (not the engine's matcher)."""
    return compiled_grammar(tiny_vla)


def _setup(engine, camera_images, views, ratio, step, max_new_tokens=320):
    cams = CAMERAS[:views]
    engine.configure(cameras=cams, image_size=(112, 112), max_new_tokens=max_new_tokens,
                     constrained=True, pruning_ratio=ratio, decode_step=step)
    return engine.prepare({c: camera_images[c] for c in cams}, HISTORY)


def _decode(engine, inputs, pruner, options, draft):
    """Return (tokens, record, every free choice's (allowed ids, logits), kept indices)."""
    engine.pruner = build_pruner(pruner, **options)       # the same selection each time
    return decode_with_choices(engine, inputs, draft)


def _one_digit_changed(waypoints):
    """The same numbers with the last digit of each changed (never carried into another)."""
    cents = np.round(np.abs(waypoints) * 100).astype(int)
    step = np.where(cents % 10 == 9, -1, 1)
    return np.where(waypoints < 0, -1, 1) * (cents + step) / 100


def _drafts(waypoints):
    rng = np.random.default_rng(7)
    later = np.vstack([waypoints[1:], 2 * waypoints[-1] - waypoints[-2]])
    return {'perfect': waypoints, 'one digit changed': _one_digit_changed(waypoints),
            'shifted': later, 'random': rng.normal(0, 20, (6, 2)),
            'longer than the reply': np.vstack([waypoints, waypoints[:2]]),
            'empty': np.zeros((0, 2))}


@pytest.mark.parametrize('views,pruner,options,ratio,step', CONFIGS)
def test_any_draft_gives_the_reply_and_logits_of_decoding_without_one(
        engine, camera_images, grammar, views, pruner, options, ratio, step):
    inputs = _setup(engine, camera_images, views, ratio, step)
    tokens, record, logits, keep = _decode(engine, inputs, pruner, options, None)
    assert record.draft_tokens == 0 and len(logits) >= 30
    waypoints, status, _ = parse_planning(engine.tokenizer.decode(tokens))
    assert status == 'ok'
    reference = None
    if engine.pruner.layers == (0,) or ratio == 0:   # transformers on the kept tokens
        with torch.no_grad():
            choices, ref_logits = reference_free_choices(engine.model, inputs, keep, tokens,
                                                         grammar)
        free = [j for j, f in enumerate(record.forced) if not f]
        assert [tokens[j] for j in free] == [choices[j] for j in free]
        reference = at_allowed_ids(logits, ref_logits[free])
    for name, draft in _drafts(waypoints).items():
        d_tokens, d_record, d_logits, _ = _decode(engine, inputs, pruner, options, draft)
        assert d_tokens == tokens, name
        assert_same_choices(d_logits, logits, **TOL)
        if reference is not None:
            assert_same_choices(d_logits, reference, **TOL)
        assert d_record.accepted_tokens <= d_record.draft_tokens, name
        if name == 'perfect':
            assert d_record.passes <= 3 and d_record.accepted_tokens >= record.forced.count(False)
        if name == 'empty':
            assert d_record.draft_tokens == 0 and d_record.passes == record.passes


@pytest.mark.parametrize('lengths', [engine_module.PASS_LENGTHS, (1, 4, 16)])
def test_static_passes_are_padded_to_a_few_lengths_and_give_the_same_reply(
        engine, camera_images, monkeypatch, lengths):
    """
    A compiled step meets only the fixed pass lengths (one CUDA graph each).

    Header runs and verification passes are padded up to the next length, longer ones split;
    the reply and its logits stay those of the dynamic cache, with and without a draft.
    """
    inputs = _setup(engine, camera_images, 6, 0.5, 'dynamic')
    tokens, record, logits, _ = _decode(engine, inputs, 'fastv', {'layer': 2}, None)
    waypoints, _, _ = parse_planning(engine.tokenizer.decode(tokens))
    monkeypatch.setattr(engine_module, 'PASS_LENGTHS', lengths)
    seen = []
    step = engine._static_pass
    monkeypatch.setattr(engine, '_static_pass', lambda token, *a: seen.append(token.shape[1])
                        or step(token, *a))
    engine.configure(decode_step='static')
    engine._static = None                   # a cache with room for these lengths' padding
    for draft in (None, waypoints):
        s_tokens, s_record, s_logits, _ = _decode(engine, inputs, 'fastv', {'layer': 2}, draft)
        assert s_tokens == tokens
        assert_same_choices(s_logits, logits, **TOL)
    assert set(seen) <= set(lengths) and max(seen) == lengths[-1]   # padded, and split
    assert s_record.passes <= 3 or lengths[-1] < 64
    engine._static = None


def test_a_draft_beyond_the_token_budget_stops_where_decoding_without_one_stops(
        engine, camera_images):
    inputs = _setup(engine, camera_images, 1, 0.0, 'dynamic', max_new_tokens=70)
    tokens, record, logits, _ = _decode(engine, inputs, 'none', {}, None)
    assert len(tokens) == 70
    draft = np.arange(12.0).reshape(6, 2) * 11.11
    d_tokens, d_record, d_logits, _ = _decode(engine, inputs, 'none', {}, draft)
    assert d_tokens == tokens and d_record.draft_tokens > 0
    assert_same_choices(d_logits, logits, **TOL)


def test_plan_reports_the_draft_and_accepts_the_reply_as_its_own_draft(engine, camera_images):
    _setup(engine, camera_images, 1, 0.0, 'dynamic')
    plain = engine.plan(camera_images, HISTORY)
    oracle = engine.plan(camera_images, HISTORY, draft=plain.waypoints)
    assert oracle.text == plain.text and oracle.decode_passes <= 3 < plain.decode_passes
    assert oracle.accepted_tokens == oracle.draft_tokens >= plain.decode_passes
    assert oracle.to_json()['accepted_tokens'] == oracle.accepted_tokens
    assert oracle.to_json()['draft_tokens'] == oracle.draft_tokens
    assert plain.draft_tokens == plain.accepted_tokens == 0
    engine.configure(draft='kinematic')
    kinematic = engine.plan(camera_images, HISTORY)
    assert kinematic.text == plain.text and kinematic.draft_tokens > 0


# ------------------------------------------------------------------ draft sources and text
def test_draft_continuation_follows_the_reply_and_resumes_at_the_next_number():
    draft = np.array([[1.25, -0.5]] + [[2.0, 3.0]] * 5)
    full = format_planning(draft)
    head = '<PLANNING>' + PLANNING_HEADER
    assert draft_continuation(head, draft) == full[len(head):]
    assert draft_continuation(head + '[1.2', draft).startswith('5, -0.50], [2.00')
    assert draft_continuation(head + '[1.3', draft) == ''          # the model disagrees
    assert draft_continuation(head + '[1.37', draft).startswith(', -0.50]')
    assert draft_continuation(head + '[1.37, -0.50]', draft, one_number=True) == ', [2.00'
    assert draft_continuation(head + '[1.2', draft, one_number=True) == '5'
    assert draft_continuation(full, draft) == ''
    written = head + '[015.50, -0.00], [1.25, 3.00]</PLANNING>'     # a reply as the draft
    assert draft_continuation(head + '[0', written) == '15.50, -0.00], [1.25, 3.00]</PLANNING>'
    assert draft_continuation(head, np.full((6, 2), np.nan)) == ''


def test_kinematic_draft_keeps_speed_and_yaw_rate():
    straight = EgoHistory([EgoState(-2.0, 0.0), EgoState(0.0, 0.0, 4.0)])
    np.testing.assert_allclose(kinematic_draft(straight), [[2.0 * k, 0.0] for k in range(1, 7)])
    assert not kinematic_draft(None).any()            # no history: standing still
    # on a circle of radius 10 m at 0.1 rad per 0.5 s step, the last point is at the origin
    r, a = 10.0, 0.1
    ring = [(r * np.sin(a * k), r * (1 - np.cos(a * k))) for k in (-2, -1, 0)]
    turning = EgoHistory([EgoState(x, y) for x, y in ring])
    chord = 2 * r * np.sin(a / 2) / 0.5
    expected = [(r * np.sin(a * k), r * (1 - np.cos(a * k))) for k in range(1, 7)]
    np.testing.assert_allclose(kinematic_draft(turning), expected, atol=0.05 * chord)


def test_previous_draft_is_the_last_plan_moved_to_now():
    plan = np.array([[2.5 * k, 0.0] for k in range(1, 7)])           # 5 m/s straight ahead
    moved = previous_draft(plan, (0.0, 0.0, 0.0), (2.5, 0.0, 0.0), 0.5)
    np.testing.assert_allclose(moved, plan)                          # we drove along it
    # the same plan seen from a car that has turned left by 90 degrees in place
    turned = previous_draft(plan, (0.0, 0.0, 0.0), (0.0, 0.0, np.pi / 2), 0.0)
    np.testing.assert_allclose(turned, np.stack([0 * plan[:, 0], -plan[:, 0]], -1), atol=1e-9)
    halfway = previous_draft(plan, (0.0, 0.0, 0.0), (1.25, 0.0, 0.0), 0.25)
    np.testing.assert_allclose(halfway, plan)


def test_compiled_step_compiles_the_padded_passes_and_gives_the_same_reply(
        engine, camera_images, monkeypatch):
    """
    decode_step='compiled' runs every pass, multi-token ones too, through torch.compile.

    Only the padded lengths reach it (CUDA graphs on a GPU); the reply is the dynamic cache's,
    without and with a draft.
    """
    inputs = _setup(engine, camera_images, 1, 0.0, 'dynamic')
    tokens, record, logits, _ = _decode(engine, inputs, 'none', {}, None)
    waypoints, _, _ = parse_planning(engine.tokenizer.decode(tokens))
    seen, compile_ = [], torch.compile

    def spy_compile(fn, **options):
        compiled = compile_(fn, **options)
        return lambda token, *a: seen.append(token.shape[1]) or compiled(token, *a)

    monkeypatch.setattr(torch, 'compile', spy_compile)
    engine.configure(decode_step='compiled')
    try:
        for draft in (None, waypoints):
            c_tokens, c_record, c_logits, _ = _decode(engine, inputs, 'none', {}, draft)
            assert c_tokens == tokens
            assert_same_choices(c_logits, logits, **TOL)
        assert c_record.passes <= 3 < record.passes
        assert set(seen) <= set(engine_module.PASS_LENGTHS) and max(seen) > 1
        engine.warmup(1, size=(112, 112))     # every length, so no real plan compiles
        assert set(seen) == set(engine_module.PASS_LENGTHS)
    finally:
        engine._static = None
