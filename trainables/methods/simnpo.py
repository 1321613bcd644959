"""SimNPO: NPO without the reference model, its reward normalised by the answer's length.

loss = −(2/β)·E_f[log σ(−(β/|y|)·log π_θ(y|x) − γ)] + λ·CE(retain)
     = −(2/β)·E_f[log σ(β·nll − γ)] + λ·CE(retain),   nll = −log π_θ(y|x)/|y|

π_θ(y|x) is the probability of the forget example's answer given its prompt and |y| the number
of its answer tokens that count (padding does not), so −log π_θ(y|x)/|y| is the answer's mean
per-token cross-entropy. Its gradient is ascent on that mean, weighted by 2·σ(γ − β·nll): it
fades as the answer becomes unlikely, so, like NPO and unlike gradient ascent, it is bounded; with
no reference model there is no frozen copy to hold. γ (the paper's reward margin) shifts where
it fades.

Reference: Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization
for LLM Unlearning", code OPTML-Group/Unlearn-Simple (TOFU, Llama-2-7B-chat: β 2.5, γ 0, retain
weight 0.135; MUSE: β 0.7–0.75). The arithmetic defaults below are calibrated for
0.4 M-parameter models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from trainables.methods._shared import all_parameters as trainable  # noqa: F401
from trainables.methods._shared import no_setup as setup  # noqa: F401
from trainables.settings import Setting
from trainables.strict import Strict

CITATION = "Fan et al. 2024, Simplicity Prevails (SimNPO), OPTML-Group/Unlearn-Simple"
LOSS = "−(2/β)·E_f[log σ(−(β/|y|)·log π_θ(y|x) − γ)] + λ·CE(r); |y|: the answer's length; no reference model"
DEFAULT_LOOP = {"lr": 1e-3, "steps": 150}


class Params(Strict):
    """SimNPO's hyperparameters (the loop's lr and steps are searched beside them)."""

    beta: float = Field(2.5, gt=0, description="inverse temperature of the length-normalised reward")
    gamma: float = Field(0.0, ge=0, description="reward margin γ")
    lam: float = Field(1.0, ge=0, description="weight of the retain cross-entropy")


def mean_answer_nll(logits: torch.Tensor, tokens: torch.Tensor, setting: Setting) -> torch.Tensor:
    """−log π(answer | prompt) / |answer| per example: the mean cross-entropy of its counted
    answer tokens, (B,)."""
    per_token = setting.answer_loss(logits, tokens, reduction="none")
    return per_token.sum(-1) / setting.answer_mask(tokens).sum(-1).clamp(min=1)


def simnpo_term(nll: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """−(2/β)·mean log σ(β·nll − γ), ``nll`` the per-example mean answer NLL (−log π/|y|)."""
    return -(2.0 / beta) * F.logsigmoid(beta * nll - gamma).mean()


def loss(model, forget: torch.Tensor, retain: torch.Tensor, params: Params, setting: Setting, state=None) -> torch.Tensor:
    """SimNPO on the forget batch plus λ·CE(retain)."""
    nll = mean_answer_nll(model(input_ids=forget).logits, forget, setting)
    retain_ce = setting.answer_loss(model(input_ids=retain).logits, retain)
    return simnpo_term(nll, params.beta, params.gamma) + params.lam * retain_ce
