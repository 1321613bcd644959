"""Circuit breakers by Representation Rerouting (RR): reroute the forget data's hidden states to
be orthogonal to the original model's, keep the retain data's where they were.

loss_t = c_rr(t)·L_rr + c_ret(t)·L_ret,  c_rr(t) = α·(1 − t/(2T)),  c_ret(t) = α·t/(2T)
L_rr   = mean over the target layers and f's counted answer positions of ReLU(cos(h_θ, h_orig))
L_ret  = mean over every layer and r's counted answer positions of ‖h_θ − h_orig‖₂

h is a decoder layer's output hidden state, h_orig the frozen original model's; t the step, T
the steps (the rerouting weight falls from α to α/2 while the retain weight rises from 0 to
α/2). ReLU: a state already orthogonal or opposed is left alone. The positions are those that
predict the answer (``setting.answer_logits``), padding excluded (``setting.answer_mask``).

Reference: Zou et al. 2024, "Improving Alignment and Robustness with Circuit Breakers", code
GraySwanAI/circuit-breakers (Llama-3-8B: target layers 10 and 20, α 10, LoRA on layers 0–20,
150 steps at lr 1e-4). Here every parameter trains, as for the other methods, and the target
layers default to every decoder layer (0.4 M-parameter models have two); ``layers`` picks some.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from trainables.methods._shared import all_parameters as trainable  # noqa: F401
from trainables.methods._shared import frozen_copy, hidden_states
from trainables.settings import Setting
from trainables.strict import Strict

CITATION = "Zou et al. 2024, Improving Alignment and Robustness with Circuit Breakers (RR), GraySwanAI/circuit-breakers"
LOSS = (
    "α(1 − t/2T)·mean ReLU(cos(h_θ(f), h_orig(f))) over the target layers + α·t/2T·mean ‖h_θ(r) − "
    "h_orig(r)‖₂ over every layer; h at the answer positions, h_orig frozen, t of T steps"
)
DEFAULT_LOOP = {"lr": 1e-3, "steps": 150}
LAYER_FIELDS = ("layers",)  # checked against the model's decoder layers when the config loads
STEPS_AWARE = True  # the loss takes step and steps: its coefficients follow the run's progress


class Params(Strict):
    """Circuit breakers' hyperparameters (the loop's lr and steps are searched beside them)."""

    alpha: float = Field(10.0, gt=0, description="α: the scale of both coefficients")
    layers: list[int] | None = Field(None, description="target decoder layers (negative: from the last); None: every one")


def memory(model, params: Params) -> dict:
    """For the memory estimate: the frozen original model; no logits kept (both terms read
    hidden states, which ``hidden_states`` takes with the vocabulary projection on one position)."""
    return {"frozen_copies": 1, "loss": "hidden"}


def setup(model, params: Params, seed: int):
    """The frozen original model, whose hidden states the loss compares against."""
    return frozen_copy(model)


def coefficients(alpha: float, step: int, steps: int) -> tuple[float, float]:
    """(c_rr, c_ret) at ``step`` of ``steps``."""
    progress = step / (2 * max(steps, 1))
    return alpha * (1 - progress), alpha * progress


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, A) ``values`` where ``mask`` holds."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def hidden(model, tokens: torch.Tensor, setting: Setting) -> list[torch.Tensor]:
    """Every decoder layer's output at the answer positions, (B, A, d) each."""
    return [setting.answer_logits(h).float() for h in hidden_states(model, tokens)[1:]]


def target_layers(layers: list[int] | None, n: int) -> list[int]:
    """The target layers' indices among ``n`` decoder layers (all of them for None)."""
    if layers is None:
        return list(range(n))
    out = sorted({i + n if i < 0 else i for i in layers})
    if not layers or out[0] < 0 or out[-1] >= n:
        raise ValueError(f"circuit_breakers: layers {layers} not among the model's {n} decoder layers")
    return out


def reroute_term(h: list[torch.Tensor], h_orig: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Mean over the given layers of the masked mean ReLU(cos(h, h_orig))."""
    return torch.stack([masked_mean(F.relu(F.cosine_similarity(a, b, dim=-1)), mask) for a, b in zip(h, h_orig)]).mean()


def retain_term(h: list[torch.Tensor], h_orig: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Mean over the layers of the masked mean ‖h − h_orig‖₂."""
    return torch.stack([masked_mean((a - b).norm(dim=-1), mask) for a, b in zip(h, h_orig)]).mean()


def loss(model, forget: torch.Tensor, retain: torch.Tensor, params: Params, setting: Setting, state,
         step: int = 0, steps: int = 1) -> torch.Tensor:
    """The scheduled sum of the rerouting term on the forget batch and the retain term."""
    c_rr, c_ret = coefficients(params.alpha, step, steps)
    with torch.no_grad():
        f_orig = hidden(state, forget, setting)
    targets = target_layers(params.layers, len(f_orig))
    f = hidden(model, forget, setting)
    total = c_rr * reroute_term([f[i] for i in targets], [f_orig[i] for i in targets], setting.answer_mask(forget))
    if c_ret:  # 0 at the first step: no retain forward passes
        with torch.no_grad():
            r_orig = hidden(state, retain, setting)
        total = total + c_ret * retain_term(hidden(model, retain, setting), r_orig, setting.answer_mask(retain))
    return total
