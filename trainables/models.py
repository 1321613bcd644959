"""Causal language models: built from a small config, or loaded by hub id or local path.

Checkpoints are safetensors plus a small JSON of metadata (``save_pretrained``'s own format);
nothing is unpickled when loading.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from trainables.loop import sharded, world
from trainables.strict import Strict

if TYPE_CHECKING:
    from transformers import PreTrainedModel


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelConfig(Strict):
    """Either ``pretrained`` (a hub id or a local path) or a fresh model of ``arch`` and size.

    ``dtype`` is the parameters' dtype (``bfloat16`` for real models on GPUs); checkpoints keep
    it. ``gradient_checkpointing`` trades recomputation for activation memory in every stage.
    ``pretrain_tokens``: the tokens a ``pretrained`` model was pre-trained on, so that compute
    can be reported as a fraction of its pre-training (6·N·tokens)."""

    pretrained: str | None = None
    pure_pretrained: str | None = None  # the pure baseline of a pretrained reference, if any
    trust_remote_code: bool = False
    dtype: Literal[tuple(DTYPES)] = "float32"  # type: ignore[valid-type]
    gradient_checkpointing: bool = False
    pretrain_tokens: float | None = Field(None, gt=0)
    arch: Literal["gpt2", "llama", "gemma2"] = "gpt2"
    d_model: int = Field(128, ge=8)
    n_layer: int = Field(2, ge=1)
    n_head: int = Field(4, ge=1)
    init_seed: int = 0

    def load_options(self) -> dict:
        """What every stage passes to ``load_model`` for this experiment's checkpoints."""
        return {"trust_remote_code": self.trust_remote_code, "dtype": self.dtype,
                "gradient_checkpointing": self.gradient_checkpointing}


def _fresh_config(cfg: ModelConfig, vocab_size: int, max_len: int):
    """A transformers config for a small model of the requested architecture."""
    AutoConfig, _ = auto_classes()
    if cfg.d_model % cfg.n_head:
        raise ValueError("model.d_model must be divisible by model.n_head")
    common = dict(vocab_size=vocab_size, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if cfg.arch == "gpt2":
        # GPT-2's own tanh-approximated GELU, as PyTorch's one fused kernel instead of
        # transformers' ``gelu_new`` (seven elementwise ops): a training step of the quick
        # model costs 16 % less on a CPU (bench/step_cost.py)
        return AutoConfig.for_model(
            "gpt2", n_positions=max_len, n_embd=cfg.d_model, n_layer=cfg.n_layer,
            n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            activation_function="gelu_pytorch_tanh", **common,
        )
    extra = {"head_dim": cfg.d_model // cfg.n_head, "query_pre_attn_scalar": cfg.d_model // cfg.n_head,
             "sliding_window": max_len} if cfg.arch == "gemma2" else {}
    return AutoConfig.for_model(
        cfg.arch, max_position_embeddings=max_len, hidden_size=cfg.d_model,
        intermediate_size=4 * cfg.d_model, num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head, **extra, **common,
    )


def build_model(cfg: ModelConfig, vocab_size: int, max_len: int) -> PreTrainedModel:
    """A model from ``cfg``: loaded from ``cfg.pretrained`` if set, else freshly initialised
    (seeded by ``cfg.init_seed``), in ``cfg.dtype``."""
    if cfg.pretrained:
        return load_model(cfg.pretrained, **cfg.load_options())
    _, AutoModelForCausalLM = auto_classes()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        model = AutoModelForCausalLM.from_config(_fresh_config(cfg, vocab_size, max_len))
    return _runtime(model.to(DTYPES[cfg.dtype]), cfg.gradient_checkpointing)


def _runtime(model: PreTrainedModel, gradient_checkpointing: bool) -> PreTrainedModel:
    if gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


# transformers builds a model under a process-wide meta-device context, which two threads loading
# at once (concurrent attacks of one adversary search) corrupt: building and wrapping take turns.
BUILD_LOCK = threading.RLock()


def auto_classes() -> tuple[type, type]:
    """transformers' ``AutoConfig`` and ``AutoModelForCausalLM``, imported on first use: seconds
    that validating a config (this module's ModelConfig) does not need. The import takes turns
    with building (BUILD_LOCK): transformers' lazy modules are not thread-safe."""
    with BUILD_LOCK:
        from transformers import AutoConfig, AutoModelForCausalLM
    return AutoConfig, AutoModelForCausalLM


def load_model(path_or_id: str | Path, trust_remote_code: bool = False, dtype: str = "auto",
               gradient_checkpointing: bool = False) -> PreTrainedModel:
    """Load a causal LM by hub id or local path, safetensors only, in ``dtype`` ("auto": the
    checkpoint's own). Hub access tokens come from the environment (``HF_TOKEN``)."""
    _, AutoModelForCausalLM = auto_classes()
    with BUILD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(
            str(path_or_id), use_safetensors=True, trust_remote_code=trust_remote_code,
            dtype=DTYPES.get(dtype, dtype),
        )
    return _runtime(model, gradient_checkpointing)


def load(path_or_id: str | Path, options: dict) -> PreTrainedModel:
    """Load a stage's input checkpoint with the experiment's load options (a spec's ``load``)."""
    return load_model(path_or_id, **options)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in evaluation mode with no parameter requiring grad (a teacher, a reference)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def save_model(model: PreTrainedModel, path: str | Path) -> None:
    """Save as safetensors + config JSON (on rank 0 only when distributed). Every rank must
    call it: FSDP-sharded weights are first gathered into a full state dict, a collective."""
    state = None
    if sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if world()[0] == 0:
        model.save_pretrained(str(path), state_dict=state)

