"""MaxEnt: push the next-token distribution on forget answers toward uniform, keep retain.

loss = mean over forget answer tokens of KL(U ‖ p_θ) + λ·CE(retain),
KL(U ‖ p) = Σ_v (1/V)·log((1/V) / p_v) = −log V − (1/V)·Σ_v log p_v   (0 iff p is uniform)

Reference: the MaxEnt shallow-unlearning baseline of Lee et al. 2025 (UNDO), "Distillation
Robustifies Unlearning"; bounded, unlike gradient ascent.
"""

from __future__ import annotations

import math
from types import ModuleType

import torch
from pydantic import Field

from trainables.methods._shared import all_parameters as trainable  # noqa: F401
from trainables.methods._shared import no_setup as setup  # noqa: F401
from trainables.strict import Strict

CITATION = "Lee et al. 2025, Distillation Robustifies Unlearning (UNDO), MaxEnt baseline"
LOSS = "KL(U ‖ p_θ) on f's answer tokens + λ·CE(r)"
DEFAULT_LOOP = {"lr": 1e-3, "steps": 150}


class Params(Strict):
    lam: float = Field(1.0, ge=0)


def kl_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(uniform ‖ softmax(logits)) per position, shape logits.shape[:-1]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -math.log(logits.shape[-1]) - logp.mean(dim=-1)


def loss(model, forget: torch.Tensor, retain: torch.Tensor, params: Params, setting: ModuleType, state=None) -> torch.Tensor:
    """Mean KL(U ‖ p_θ) over the forget batch's answer positions plus λ·CE(retain)."""
    logits = model(input_ids=forget).logits
    kl = kl_uniform(setting.answer_logits(logits)).mean()
    return kl + params.lam * setting.answer_loss(model(input_ids=retain).logits, retain)
