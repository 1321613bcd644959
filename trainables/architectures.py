"""The published shapes of the paper-scale models, so that planning (memory, FLOPs) and the
paper-scale rehearsal (``bench/paper_scale.py``: random weights, real architectures) need no
download. Each entry is the hub config's shape fields, copied from the model's ``config.json``;
``config(name)`` turns one into a transformers config. ``for_pretrained`` maps a hub id (or a
local path ending in the model's name) to its entry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # mistralai/Mistral-7B-v0.1; HuggingFaceH4/zephyr-7b-beta is a fine-tune of it (same shapes)
    "mistral-7b": dict(
        model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768,
        rope_theta=10000.0, sliding_window=4096, tie_word_embeddings=False),
    # meta-llama/Meta-Llama-3-8B(-Instruct)
    "llama-3-8b": dict(
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192,
        rope_theta=500000.0, tie_word_embeddings=False),
    # google/gemma-2-2b
    "gemma-2-2b": dict(
        model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000,
        query_pre_attn_scalar=256, sliding_window=4096, max_position_embeddings=8192,
        final_logit_softcapping=30.0, attn_logit_softcapping=50.0, tie_word_embeddings=True),
    # google/gemma-2-9b
    "gemma-2-9b": dict(
        model_type="gemma2", hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
        num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=256000,
        query_pre_attn_scalar=256, sliding_window=4096, max_position_embeddings=8192,
        final_logit_softcapping=30.0, attn_logit_softcapping=50.0, tie_word_embeddings=True),
}

# hub ids (lower case, the part after the organisation) → entry
HUB_NAMES = {
    "mistral-7b-v0.1": "mistral-7b", "zephyr-7b-beta": "mistral-7b",
    "meta-llama-3-8b": "llama-3-8b", "meta-llama-3-8b-instruct": "llama-3-8b",
    "llama-3-8b-instruct-tar-bio": "llama-3-8b",
    "gemma-2-2b": "gemma-2-2b", "gemma-2-2b-it": "gemma-2-2b",
    "gemma-2-9b": "gemma-2-9b", "gemma-2-9b-it": "gemma-2-9b",
}


def config(name: str):
    """The transformers config of ``ARCHITECTURES[name]``."""
    from transformers import AutoConfig

    fields = dict(ARCHITECTURES[name])
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def for_pretrained(path_or_id: str) -> str | None:
    """The entry whose shapes a hub id or local path has (by its last path part), or None."""
    return HUB_NAMES.get(str(path_or_id).rstrip("/").split("/")[-1].lower())


# where a config.json gives its decoder layer count, by architecture family
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def decoder_layers_of(pretrained: str) -> int | None:
    """Decoder layers of a pretrained model, when known without a download: a known paper
    model's (by name), else a local folder's ``config.json``; None for any other hub id."""
    known = for_pretrained(pretrained)
    if known:
        return ARCHITECTURES[known]["num_hidden_layers"]
    path = Path(os.path.expanduser(pretrained)) / "config.json"
    if not path.is_file():
        return None
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the loader reports an unreadable checkpoint, with its own message
    fields = fields.get("text_config", fields)  # multimodal wrappers keep the decoder's shape apart
    return next((fields[k] for k in LAYER_COUNT_KEYS if isinstance(fields.get(k), int)), None)
