"""GradAscent: maximise the loss on the forget data.

loss = −CE(forget)

Reference: Jang et al. 2022, "Knowledge Unlearning for Mitigating Privacy Risks in Language
Models". Unbounded: it drags retain accuracy down with it unless stopped early.
"""

from __future__ import annotations

from types import ModuleType

import torch

from trainables.methods._shared import all_parameters as trainable  # noqa: F401
from trainables.methods._shared import no_setup as setup  # noqa: F401
from trainables.strict import Strict

CITATION = "Jang et al. 2022, Knowledge Unlearning for Mitigating Privacy Risks in Language Models"
LOSS = "−CE(f)"
# On the arithmetic reference no (lr, steps) reaches V ≤ 0.10 with retain ≥ 0.80: retain collapses
# first (measured: 3e-4 × 12 → retain 0.89, V 0.39; 3e-4 × 20 → 0.43, 0.19). This is the
# gentler end.
DEFAULT_LOOP = {"lr": 3e-4, "steps": 12}


class Params(Strict):
    """GradAscent has no hyperparameters beyond the loop's learning rate and steps."""


def loss(model, forget: torch.Tensor, retain: torch.Tensor, params: Params, setting: ModuleType, state) -> torch.Tensor:
    """−CE on the forget batch's answer tokens (the retain batch is unused)."""
    return -setting.answer_loss(model(input_ids=forget).logits, forget)
