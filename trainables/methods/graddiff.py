"""GradDiff: gradient ascent on the forget data, gradient descent on the retain data.

loss = −CE(forget) + λ·CE(retain)

Reference: Liu et al. 2022, "Continual Learning and Private Unlearning"; the form used as a
shallow baseline by Maini et al. 2024 (TOFU) and Lee et al. 2025 (UNDO).
"""

from __future__ import annotations

from types import ModuleType

import torch
from pydantic import Field

from trainables.methods._shared import all_parameters as trainable  # noqa: F401
from trainables.methods._shared import no_setup as setup  # noqa: F401
from trainables.strict import Strict

CITATION = "Liu et al. 2022 (GradDiff), as used in TOFU (Maini et al. 2024) and UNDO (Lee et al. 2025)"
LOSS = "−CE(f) + λ·CE(r)"
DEFAULT_LOOP = {"lr": 1e-3, "steps": 150}


class Params(Strict):
    """GradDiff's hyperparameters (the loop's lr and steps are searched beside them)."""

    lam: float = Field(5.0, ge=0)


def loss(model, forget: torch.Tensor, retain: torch.Tensor, params: Params, setting: ModuleType, state=None) -> torch.Tensor:
    """−CE on the forget batch plus λ·CE on the retain batch (answer tokens only)."""
    ce_forget = setting.answer_loss(model(input_ids=forget).logits, forget)
    ce_retain = setting.answer_loss(model(input_ids=retain).logits, retain)
    return -ce_forget + params.lam * ce_retain
