"""Causal language models: built from a small config, or loaded by hub id or local path.

Checkpoints are safetensors plus a small JSON of metadata (``save_pretrained``'s own format);
nothing is unpickled when loading.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from trainables.loop import world


class ModelConfig(BaseModel):
    """Either ``pretrained`` (a hub id or a local path) or a fresh model of ``arch`` and size."""

    model_config = ConfigDict(extra="forbid")
    pretrained: str | None = None
    trust_remote_code: bool = False
    arch: Literal["gpt2", "llama"] = "gpt2"
    d_model: int = Field(128, ge=8)
    n_layer: int = Field(2, ge=1)
    n_head: int = Field(4, ge=1)
    init_seed: int = 0


def _fresh_config(cfg: ModelConfig, vocab_size: int, max_len: int):
    """A transformers config for a small model of the requested architecture."""
    if cfg.d_model % cfg.n_head:
        raise ValueError("model.d_model must be divisible by model.n_head")
    common = dict(vocab_size=vocab_size, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if cfg.arch == "gpt2":
        return AutoConfig.for_model(
            "gpt2", n_positions=max_len, n_embd=cfg.d_model, n_layer=cfg.n_layer,
            n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )
    return AutoConfig.for_model(
        "llama", max_position_embeddings=max_len, hidden_size=cfg.d_model,
        intermediate_size=4 * cfg.d_model, num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head, **common,
    )


def build_model(cfg: ModelConfig, vocab_size: int, max_len: int) -> PreTrainedModel:
    """A model from ``cfg``: loaded from ``cfg.pretrained`` if set, else freshly initialised
    (seeded by ``cfg.init_seed``)."""
    if cfg.pretrained:
        return load_model(cfg.pretrained, trust_remote_code=cfg.trust_remote_code)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        return AutoModelForCausalLM.from_config(_fresh_config(cfg, vocab_size, max_len))


# transformers builds a model under a process-wide meta-device context, which two threads loading
# at once (concurrent attacks of one adversary search) corrupt: building and wrapping take turns.
BUILD_LOCK = threading.RLock()


def load_model(path_or_id: str | Path, trust_remote_code: bool = False) -> PreTrainedModel:
    """Load a causal LM by hub id or local path, safetensors only."""
    with BUILD_LOCK:
        return AutoModelForCausalLM.from_pretrained(
            str(path_or_id), use_safetensors=True, trust_remote_code=trust_remote_code
        )


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in evaluation mode with no parameter requiring grad (a teacher, a reference)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def save_model(model: PreTrainedModel, path: str | Path) -> None:
    """Save as safetensors + config JSON (on rank 0 only when distributed)."""
    if world()[0] == 0:
        model.save_pretrained(str(path))

