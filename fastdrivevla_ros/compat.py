"""The transformers window this package is tested against, and the one place that reads
transformers' KV-cache internals.

Why the bounds (found by installing each 5.x wheel into a throwaway venv and running the engine,
pruner, ReconPruner and loading tests against it; see docs/ros.md "transformers window"):
  * 5.24.0 is the first release whose decoder layers and `create_causal_mask` take `cache=`;
    in 5.23 and older a decoder layer silently swallows `cache=` into **kwargs (nothing is
    cached). With the old `past_key_values=` name the oldest passing release was 5.20.0.
  * 5.40.0 is the release transformers announces for removing the deprecated names
    (`deprecate_kwarg(..., "5.40.0")` throughout 5.24), the next known breaking one.
"""

from __future__ import annotations

import torch

from fastdrivevla_ros.errors import ConfigError, InputError

#: the requirement `check_transformers` enforces; setup.py and package.xml state the same window
#: (test/test_compat.py checks they agree)
TRANSFORMERS_REQUIREMENT = "transformers>=5.24,<5.40"


def check_transformers(version: str | None = None) -> None:
    """Refuse a transformers release outside TRANSFORMERS_REQUIREMENT (default: the installed
    one): outside it the engine's calls are known to break or silently change meaning."""
    from packaging.requirements import Requirement

    if version is None:
        import transformers

        version = transformers.__version__
    if not Requirement(TRANSFORMERS_REQUIREMENT).specifier.contains(version, prereleases=True):
        raise ConfigError(f"transformers {version} is installed; fastdrivevla_ros needs "
                          f"{TRANSFORMERS_REQUIREMENT} (pip install '{TRANSFORMERS_REQUIREMENT}')")


def cached_keys(cache, layer: int) -> torch.Tensor:
    """[B, kv_heads, S, head_dim] the rotated keys a transformers `DynamicCache` holds for
    decoder layer `layer` (filled by the prefill and decode steps so far)."""
    return cached_key_values(cache, layer)[0]


def cached_key_values(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, values), each [B, kv_heads, S, head_dim], of decoder layer `layer` of a
    transformers `DynamicCache` (the engine copies them into a pre-allocated StaticCache)."""
    layers = getattr(cache, "layers", None)
    if layers is None or not 0 <= layer < len(layers):
        raise InputError(f"the KV cache has no layer {layer}")
    keys = getattr(layers[layer], "keys", None)
    values = getattr(layers[layer], "values", None)
    if keys is None or keys.ndim != 4 or values is None:
        raise InputError(f"the KV cache holds no keys for layer {layer}")
    return keys, values


def static_layer_fill(cache, layer: int):
    """(tokens held [0-d tensor, or 0 before the first write], capacity) of decoder layer
    `layer` of a transformers `StaticCache`; the tensor is read on device (no host sync, so a
    compiled decode step can use it)."""
    entry = cache.layers[layer]
    held = entry.cumulative_length if entry.is_initialized else 0
    return held, entry.max_cache_len


def crop_cache(cache, tokens: int) -> None:
    """Drop the last `tokens` entries of every decoder layer of a transformers DynamicCache or
    StaticCache (a rejected draft's keys/values). Per layer, as the layers' lengths differ after
    layer-K pruning; a StaticCache only lowers its fill, so the next pass overwrites them."""
    if tokens <= 0:
        return
    for entry in cache.layers:
        entry.crop(-tokens)
