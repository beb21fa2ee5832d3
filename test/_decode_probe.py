"""Run the engine's decode loop and keep the logits of every lm_head call."""

from __future__ import annotations

import torch

from fastdrivevla_ros.vla.engine import _Stopwatch


def decode_with_logits(engine, inputs):
    """Return (tokens, decode record, logits of every lm_head call [calls, V], kept indices)."""
    seen = []
    handle = engine.model.lm_head.register_forward_hook(
        lambda mod, args, out: seen.append(out.detach().reshape(-1, out.shape[-1])[-1].clone()))
    try:
        tokens, seq, record = engine.generate_tokens(inputs, _Stopwatch(engine.device), {})
    finally:
        handle.remove()
    return tokens, record, torch.stack(seen), seq.alive


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
