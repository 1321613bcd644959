"""LoRA adapters for attacks, through ``peft``: which linear layers to adapt, found by module path
so the same names work for GPT-2 (``attn.c_attn``, ``mlp.c_fc`` — Conv1D), Llama, Mistral and
Gemma-2 (``self_attn.q_proj``, ``mlp.down_proj``) and other decoder stacks."""

from __future__ import annotations

import math

import torch

from trainables.models import BUILD_LOCK

TARGETS = ("attn", "mlp", "all")
_ATTN_PARTS = ("attn", "attention")


def target_modules(model: torch.nn.Module, targets: str) -> list[str]:
    """Names of the linear layers inside attention blocks (``attn``), MLP blocks (``mlp``) or
    both (``all``); never the embeddings or the output head."""
    # transformers and peft are imported where used, as in models.auto_classes: config
    # validation reaches this module (through the attack stage) and needs neither.
    from transformers.pytorch_utils import Conv1D

    if targets not in TARGETS:
        raise ValueError(f"lora targets must be one of {TARGETS}, got {targets!r}")
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, Conv1D)):
            continue
        parts = name.split(".")
        attn = any(p in part for part in parts for p in _ATTN_PARTS)
        mlp = "mlp" in parts
        if (targets in ("attn", "all") and attn) or (targets in ("mlp", "all") and mlp):
            names.append(name)
    if not names:
        raise ValueError(f"lora: no {targets} linear layers found in {type(model).__name__}")
    return names


def add_lora(model: torch.nn.Module, r: int, alpha: float, dropout: float, targets: str,
             seed: int = 0) -> torch.nn.Module:
    """``model`` wrapped with LoRA adapters of rank ``r`` (scale alpha / r); only the adapters
    train, every base weight is frozen. The A matrices are drawn from their own generator
    (peft's Kaiming-uniform init, B = 0), so concurrent attacks in one process stay seeded."""
    with BUILD_LOCK:  # a first import too takes turns: transformers' lazy modules are not thread-safe
        from peft import LoraConfig, get_peft_model
        from transformers.pytorch_utils import Conv1D
    names = target_modules(model, targets)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=names,
                     fan_in_fan_out=any(isinstance(model.get_submodule(n), Conv1D) for n in names))
    with BUILD_LOCK:
        model = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.nn.init.kaiming_uniform_(torch.empty(p.shape), a=math.sqrt(5), generator=gen))
    return model
