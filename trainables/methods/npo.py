"""NPO: negative preference optimisation against a frozen reference policy.

loss = (2/β)·E_f[log(1 + (π_θ(y|x)/π_ref(y|x))^β)] + λ·CE(retain)
     = (2/β)·E_f[softplus(β·(log π_θ − log π_ref))] + λ·CE(retain)

π is the probability of the forget example's answer given its prompt; π_ref is the model
before unlearning, frozen. At π_θ = π_ref the forget term is (2/β)·log 2.

Reference: Zhang et al. 2024, "Negative Preference Optimization: From Catastrophic Collapse to
Effective Unlearning".
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from pydantic import Field

from trainables.methods._shared import all_parameters as trainable  # noqa: F401
from trainables.methods._shared import frozen_copy
from trainables.strict import Strict

CITATION = "Zhang et al. 2024, Negative Preference Optimization (NPO)"
LOSS = "(2/β)·E_f[log(1 + (π_θ/π_ref)^β)] + λ·CE(r), π_ref frozen"
DEFAULT_LOOP = {"lr": 1e-3, "steps": 150}


class Params(Strict):
    beta: float = Field(0.1, gt=0)
    lam: float = Field(1.0, ge=0)


def memory(model, params: Params) -> dict:
    """For the memory estimate: the frozen reference policy."""
    return {"frozen_copies": 1}


def setup(model, params: Params, seed: int):
    """The frozen reference policy π_ref: the model as it was before unlearning."""
    return frozen_copy(model)


def sequence_logprob(logits: torch.Tensor, tokens: torch.Tensor, setting: ModuleType) -> torch.Tensor:
    """log π(answer | prompt) per example: the sum of the answer tokens' log-probabilities."""
    return -setting.answer_loss(logits, tokens, reduction="none").sum(dim=-1)


def npo_term(logp_theta: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """(2/β)·mean softplus(β·(log π_θ − log π_ref))."""
    return (2.0 / beta) * F.softplus(beta * (logp_theta - logp_ref)).mean()


def loss(model, forget: torch.Tensor, retain: torch.Tensor, params: Params, setting: ModuleType, state) -> torch.Tensor:
    """NPO on the forget batch plus λ·CE(retain)."""
    logp = sequence_logprob(model(input_ids=forget).logits, forget, setting)
    with torch.no_grad():
        logp_ref = sequence_logprob(state(input_ids=forget).logits, forget, setting)
    retain_ce = setting.answer_loss(model(input_ids=retain).logits, retain)
    return npo_term(logp, logp_ref, params.beta) + params.lam * retain_ce
