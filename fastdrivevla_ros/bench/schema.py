"""JSON Schemas of bench.json and scaling.json (documented in benchmarks/README.md).

Stability: within one `schema_version` keys are only ever ADDED, never renamed or removed, and
units never change (FLOPs as counts, times in ms, memory in MiB), so `additionalProperties` is
left open. Validation uses `jsonschema` when it is installed; otherwise a small checker of the
subset used here (type, required, properties, items, enum, const, minimum, exclusiveMaximum,
minItems).
"""

from __future__ import annotations

from fastdrivevla_ros.errors import DataError

_NUM = {"type": "number", "minimum": 0}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}

SPREAD = {
    "type": "object",
    "required": ["median", "p25", "p75", "min", "max", "n"],
    "properties": {**{k: _NUM for k in ("median", "p25", "p75", "min", "max")},
                   "n": {"type": "integer", "minimum": 1}},
}


def _obj(required: dict) -> dict:
    return {"type": "object", "required": list(required), "properties": required}


COMMON_HEADER = {
    "schema_version": {"const": 1},
    "created": _STR,
    "device": _obj({"type": {"enum": ["cpu", "cuda"]}, "name": _STR,
                    "torch_threads": {"type": "integer", "minimum": 1}}),
    "dtype": {"enum": ["float32", "bfloat16", "float16"]},
    "attn_implementation": _STR,
    "versions": _obj({"python": _STR, "torch": _STR, "transformers": _STR}),
    "model": _obj({
        "text": _obj({k: {"type": "integer", "minimum": 1} for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size")}),
        "vision": {"type": "object"},
        "params": _obj({k: _INT for k in ("llm_layers", "embed_tokens", "lm_head", "vision",
                                          "total")})}),
    "load_average": {"type": "object"},
    "settings": {"type": "object"},
}

#: stage wall-clock entries of `ms` (each a SPREAD); decode_per_token = decode / num_generated
TIMED = ("preprocess", "vision", "scoring", "prefill", "decode", "decode_per_token", "plan")
#: process CPU-time entries of `cpu_ms` (null on CUDA)
CPU_TIMED = ("vision", "scoring", "prefill", "decode", "decode_per_token", "plan")
#: FLOP entries of `flops` (counts, not GFLOPs)
FLOP_KEYS = ("vision", "pruner", "pruner_in_vision", "prefill", "prefill_attention", "decode",
             "decode_per_token", "other", "total", "total_without_vision")

#: measured speedups versus ratio 0 (from medians in `speedup`, from minima in `speedup_min`)
SPEEDUP_KEYS = ("prefill", "prefill_with_scoring", "decode_per_token", "plan")

BENCH_RECORD = _obj({
    "pruner": _STR,
    "ratio": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    "layers": {"type": "array", "items": _INT},
    "options": {"type": "object"},
    "tokens": _obj({k: _INT for k in ("visual_total", "visual_kept", "text", "prefill_input",
                                      "prefill_final")}),
    "num_generated": {"type": "integer", "minimum": 1},
    "decode_passes": _INT,
    "flops": _obj({k: _NUM for k in FLOP_KEYS}),
    "ms": _obj({k: SPREAD for k in TIMED}),
    "cpu_ms": {**_obj({k: SPREAD for k in CPU_TIMED}), "type": ["object", "null"]},
    "peak_memory_mib": SPREAD,
    "speedup": _obj({k: _NUM_OR_NULL for k in SPEEDUP_KEYS}),
    "speedup_min": _obj({k: _NUM_OR_NULL for k in SPEEDUP_KEYS}),
    "speedup_cpu": {**_obj({k: _NUM_OR_NULL for k in SPEEDUP_KEYS}), "type": ["object", "null"]},
    "flop_bound_speedup": _obj({k: _NUM_OR_NULL for k in (
        "prefill", "prefill_with_pruner", "decode_per_token", "total", "total_without_vision")}),
})

BENCH_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fastdrivevla bench.json",
    **_obj({
        "header": _obj({
            **COMMON_HEADER,
            "kind": {"const": "bench"},
            "settings": _obj({"model_dir": _STR, "views": {"enum": [1, 6]},
                              "cameras": {"type": "array", "items": _STR, "minItems": 1},
                              # null: the real constrained reply was decoded
                              "decode_tokens": {"type": ["integer", "null"], "minimum": 1},
                              "repeats": {"type": "integer", "minimum": 1},
                              "warmup": _INT,
                              "ratios": {"type": "array", "items": _NUM},
                              "pruners": {"type": "array", "items": _STR}}),
            "memory": {"type": "object"},
            "skipped": {"type": "array", "items": _obj({"pruner": _STR, "reason": _STR})},
            "notes": {"type": "array", "items": _STR},
        }),
        "records": {"type": "array", "minItems": 1, "items": BENCH_RECORD},
    }),
}
#: one row of the whole-plan table (bench/plans.py); `plans` is [] in the fixed-length mode
PLAN_ROW = _obj({
    "label": _STR, "engine": {"enum": ["transformers", "ours"]}, "pruner": _STR,
    "ratio": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    "forced_tokens": {"type": "boolean"}, "decode_passes": _INT,
    "tokens_emitted": {"type": "integer", "minimum": 1},
    "ms": _obj({k: SPREAD for k in ("preprocess", "vision", "scoring", "prefill", "decode",
                                    "plan")}),
    "speedup_plan_vs_generate": _NUM_OR_NULL,
    "speedup_decode_vs_step_by_step": _NUM_OR_NULL,
    "draft": {"enum": ["none", "oracle", "wrong"]}, "draft_tokens": _INT,
    "accepted_tokens": _INT, "plan_time_vs_draft_none": _NUM_OR_NULL,
})
BENCH_SCHEMA["properties"]["plans"] = {"type": "array", "items": PLAN_ROW}

SCALING_POINT = _obj({
    "label": _STR, "views": {"enum": [1, 6]},
    "image_size": {"type": "array", "items": {"type": "integer", "minimum": 28}},
    "tokens": _obj({"visual": {"type": "integer", "minimum": 1},
                    "prefill": {"type": "integer", "minimum": 1}}),
    "flops": _obj({k: _NUM for k in ("vision", "prefill", "prefill_attention",
                                     "prefill_linear")}),
    "attention_share": _NUM_OR_NULL,
    "ms": _obj({"vision": SPREAD, "prefill": SPREAD}),
    "cpu_ms": {**_obj({"vision": SPREAD, "prefill": SPREAD}), "type": ["object", "null"]},
    "peak_memory_mib": SPREAD,
    "superlinearity": _obj({"ms": _NUM_OR_NULL, "flops": _NUM_OR_NULL}),
})

SCALING_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fastdrivevla scaling.json",
    **_obj({"header": _obj({**COMMON_HEADER, "kind": {"const": "scaling"}}),
            "points": {"type": "array", "minItems": 1, "items": SCALING_POINT}}),
}


def validate_bench(doc: dict) -> None:
    """Raise DataError if `doc` does not match BENCH_SCHEMA."""
    _validate(doc, BENCH_SCHEMA)


def validate_scaling(doc: dict) -> None:
    """Raise DataError if `doc` does not match SCALING_SCHEMA."""
    _validate(doc, SCALING_SCHEMA)


def _validate(doc, schema) -> None:
    try:
        import jsonschema
    except ImportError:
        _check(doc, schema, "$")
        return
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as e:
        raise DataError(f"benchmark document invalid at {e.json_path}: {e.message}") from e


_TYPES = {"object": dict, "array": list, "string": str, "null": type(None),
          "number": (int, float), "integer": int, "boolean": bool}


def _is_type(value, name: str) -> bool:
    if isinstance(value, bool) and name in ("number", "integer"):
        return False   # JSON Schema: true/false are not numbers
    return isinstance(value, _TYPES[name])


def _check(value, schema: dict, path: str) -> None:
    """The subset of JSON Schema the schemas above use (no jsonschema installed)."""
    def fail(msg: str):
        raise DataError(f"benchmark document invalid at {path}: {msg}")

    if "const" in schema and value != schema["const"]:
        fail(f"{value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        fail(f"{value!r} not one of {schema['enum']}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            fail(f"{type(value).__name__} is not {' or '.join(types)}")
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            fail(f"{value} < minimum {schema['minimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            fail(f"{value} >= exclusive maximum {schema['exclusiveMaximum']}")
    if isinstance(value, dict):
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            fail(f"missing {missing}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            fail(f"fewer than {schema['minItems']} items")
        for i, item in enumerate(value):
            if "items" in schema:
                _check(item, schema["items"], f"{path}[{i}]")
