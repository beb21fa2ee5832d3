"""
Per-step logits of the engine against references built from transformers alone.

Unpruned: transformers' own `generate(output_logits=True)`. Pruned: transformers' language
model run on the kept embeddings at their ORIGINAL M-RoPE positions (layer-0 pruners), or on the
full sequence with the pruned tokens masked out as keys from layer K on (FastV-style pruners),
then greedy decode on its own cache at positions max(P) + 1 + t. Nothing here calls the
engine's prefill/decode code; the engine only provides its inputs and which tokens it kept.
The tiny model's greedy reply does not loop (checked), so a decode at wrong positions changes
the logits and the tokens.
"""

import pytest
import torch

from _decode_probe import decode_with_logits, reference_embeddings_and_positions
from fastdrivevla_ros.pruning.base import Pruner, Selection
from fastdrivevla_ros.pruning.registry import build_pruner
from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory, EgoState

HISTORY = EgoHistory([EgoState(-2.0, 0.1, 4.0, (0.2, 0.0), 0.01), EgoState(0.0, 0.0, 4.1)])
STEPS = 32
TOL = dict(atol=2e-4, rtol=1e-4)


class _KeepAllAtLayer(Pruner):
    """Goes through the layer-K path (selection, shrunk caches, rebuilt RoPE) keeping all."""

    name = "keep_all_at_layer"

    def __init__(self, layer):
        self.layers = (layer,)

    def stage_budgets(self, final, totals):
        return [list(totals)]

    def select(self, ctx, budgets):
        return Selection([v.indices.clone() for v in ctx.views], [None] * len(ctx.views))


def _setup(engine, camera_images, views, **settings):
    cams = CAMERAS[:views]
    size = (168, 112) if views == 1 else (112, 112)    # inputs whose greedy replies vary
    engine.configure(cameras=cams, image_size=size, max_new_tokens=STEPS, **settings)
    engine.stop_ids = []            # a random model may emit an end token; decode all steps
    return engine.prepare({c: camera_images[c] for c in cams}, HISTORY)


def _reference_generate(model, inputs):
    out = model.generate(**inputs.generate_kwargs(), max_new_tokens=STEPS, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, eos_token_id=None,
                         min_new_tokens=STEPS)
    return out.sequences[0, inputs.input_ids.shape[1]:].tolist(), torch.cat(out.logits)


@pytest.mark.parametrize("views", [1, 6])
def test_ratio_zero_step_logits_match_transformers_generate(engine, camera_images, views):
    inputs = _setup(engine, camera_images, views)
    tokens, _, logits, _ = decode_with_logits(engine, inputs)
    ref_tokens, ref_logits = _reference_generate(engine.model, inputs)
    assert len(set(ref_tokens)) >= 8, "the reference loops; the test could not see a bug"
    assert tokens == ref_tokens
    torch.testing.assert_close(logits, ref_logits, **TOL)


@pytest.mark.parametrize("layer", [1, 3])
def test_layer_k_path_keeping_everything_matches_transformers_generate(engine, camera_images,
                                                                       layer):
    engine.pruner = _KeepAllAtLayer(layer)
    inputs = _setup(engine, camera_images, 6, pruning_ratio=0.5)
    tokens, _, logits, alive = decode_with_logits(engine, inputs)
    assert len(alive) == inputs.input_ids.shape[1]
    ref_tokens, ref_logits = _reference_generate(engine.model, inputs)
    assert tokens == ref_tokens
    torch.testing.assert_close(logits, ref_logits, **TOL)


# ------------------------------------------------------------------ independent reference
def _reference_greedy(model, first_out, cache, first_position, step_mask=None):
    """Greedy decode with transformers' language model on its own cache."""
    lm = model.model.language_model
    logits = [model.lm_head(first_out.last_hidden_state[0, -1])]
    tokens = [int(torch.argmax(logits[-1]))]
    for t in range(STEPS - 1):
        kwargs = {} if step_mask is None else {"attention_mask": step_mask(t)}
        out = lm(inputs_embeds=lm.embed_tokens(torch.tensor([[tokens[-1]]])),
                 position_ids=torch.full((3, 1, 1), first_position + t), cache=cache,
                 use_cache=True, **kwargs)
        logits.append(model.lm_head(out.last_hidden_state[0, -1]))
        tokens.append(int(torch.argmax(logits[-1])))
    return tokens, torch.stack(logits)


def _reference_layer0(model, inputs, keep):
    """language_model(inputs_embeds=E[keep], position_ids=P[:, keep]), then decode."""
    from transformers import DynamicCache

    embeds, pos = reference_embeddings_and_positions(model, inputs)
    cache = DynamicCache(config=model.config.text_config)
    out = model.model.language_model(inputs_embeds=embeds[keep][None],
                                     position_ids=pos[:, None, keep], cache=cache,
                                     use_cache=True)
    return _reference_greedy(model, out, cache, int(pos.max()) + 1)


def _reference_layer_k(model, inputs, keep, layer):
    """
    Run every token through layers < K, then mask the pruned tokens out as keys.

    Masking them from layer K on gives the same result as dropping them; decode masks them too.
    """
    from transformers import DynamicCache

    embeds, pos = reference_embeddings_and_positions(model, inputs)
    n = len(embeds)
    kept = torch.zeros(n, dtype=torch.bool)
    kept[keep] = True
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    config = model.config.text_config
    cache = DynamicCache(config=config)
    saved = config.layer_types
    # transformers picks each layer's mask by config.layer_types[i] from a dict of masks
    config.layer_types = ["full_attention"] * layer + ["pruned"] * (len(saved) - layer)
    try:
        out = model.model.language_model(
            inputs_embeds=embeds[None], position_ids=pos[:, None, :], cache=cache,
            use_cache=True, attention_mask={"full_attention": causal[None, None],
                                            "pruned": (causal & kept)[None, None]})

        def step_mask(t):
            cols = torch.cat([kept, torch.ones(t + 1, dtype=torch.bool)])
            return {"full_attention": torch.ones(1, 1, 1, n + t + 1, dtype=torch.bool),
                    "pruned": cols[None, None, None]}

        return _reference_greedy(model, out, cache, int(pos.max()) + 1, step_mask)
    finally:
        config.layer_types = saved


@pytest.mark.parametrize("name,options", [("random", {"seed": 3}), ("recon", {"untrained": True}),
                                          ("fastv", {"layer": 2})])
@pytest.mark.parametrize("views", [1, 6])
def test_pruned_prefill_and_decode_match_the_language_model_on_kept_tokens(
        engine, camera_images, name, options, views):
    engine.pruner = build_pruner(name, **options)
    inputs = _setup(engine, camera_images, views, pruning_ratio=0.4)
    tokens, _, logits, alive = decode_with_logits(engine, inputs)
    assert len(alive) < inputs.input_ids.shape[1]             # something was pruned
    layer = engine.pruner.layers[0]
    with torch.no_grad():
        if layer == 0:
            ref_tokens, ref_logits = _reference_layer0(engine.model, inputs, alive)
        else:
            ref_tokens, ref_logits = _reference_layer_k(engine.model, inputs, alive, layer)
    assert len(set(ref_tokens)) >= 8
    assert tokens == ref_tokens
    torch.testing.assert_close(logits, ref_logits, **TOL)
