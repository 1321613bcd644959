"""Targeted latent adversarial training (LAT) for unlearning: unlearn while an adversary in the
residual stream tries to bring the forget behaviour back.

Inner (the adversary): δ, added to the output of decoder layer ℓ at every position, is fitted
by ``pgd_steps`` steps of normalised gradient descent on CE(forget | δ) — the perturbation that
best elicits the forget answers — each step ``pgd_step``·ε long and projected back onto the
ball ‖δ_t‖₂ ≤ ε at every token t.
Outer (the model), at the adversary's δ, held fixed:

loss = −mean log(1 − p(forget answer | δ)) + λ · CE(retain)

the "away" loss of the authors' unlearning runs (it saturates once p is small, unlike −CE), with the retain term
unperturbed. Only the model's update is returned; the inner steps leave no gradient on it.

Reference: Sheshadri et al. 2024, "Latent Adversarial Training Improves Robustness to
Persistent Harmful Behaviors in LLMs" (targeted LAT), code ``aengusl/latent-adversarial-training``
(WMDP unlearning: ε 2–6 in the residual stream of Llama-3-8B layers 8 / 16 / 24, 16 PGD steps,
the log(1 − p) away loss with a retain SFT loss). Here: one layer, the arithmetic defaults
below calibrated for 0.4 M-parameter models. It unlearns the reference, or, with
``defender.safeguard`` (e.g. ``{method: rmu}``), trains on another safeguard's output as the
paper's RMU + LAT does (the defender's pipeline; no stage of its own).
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Iterator

import torch
from pydantic import Field

from trainables.methods._shared import all_parameters as trainable  # noqa: F401
from trainables.methods._shared import no_setup as setup  # noqa: F401
from trainables.methods._shared import unwrap
from trainables.methods.rmu import decoder_layers, layer_index
from trainables.strict import Strict

CITATION = "Sheshadri et al. 2024, targeted latent adversarial training (LAT), aengusl/latent-adversarial-training"
LOSS = (
    "−mean log(1 − p(f's answer | δ)) + λ·CE(r); δ: the adversary, `pgd_steps` "
    "normalised-gradient steps of `pgd_step`·ε on CE(f | δ) at layer ℓ's output, each token's δ "
    "in the ℓ2 ball ε"
)
DEFAULT_LOOP = {"lr": 1e-3, "steps": 150}
LAYER_FIELDS = ("layer",)  # checked against the model's decoder layers when the config loads


class Params(Strict):
    """LAT's hyperparameters (the loop's lr and steps are searched beside them)."""

    layer: int = Field(0, description="ℓ, whose output the adversary perturbs; negative counts from the last")
    epsilon: float = Field(4.0, ge=0, description="ℓ2 radius of δ at each token")
    pgd_steps: int = Field(4, ge=0, le=64)
    pgd_step: float = Field(0.5, gt=0, description="each PGD step's length, as a fraction of ε")
    lam: float = Field(1.0, ge=0, description="retain weight")
    layers_path: str | None = None  # decoder layers' module path; None: found as for RMU


@contextlib.contextmanager
def perturbed(model: torch.nn.Module, params: Params, delta: torch.Tensor) -> Iterator[None]:
    """``model`` with ``delta`` added to the output of decoder layer ℓ (inside the block)."""
    base = unwrap(model)
    layer = decoder_layers(base, params)[layer_index(base, params)]

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def project(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """δ with every token's vector scaled into the ℓ2 ball of radius ε."""
    norm = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(epsilon / norm.clamp_min(1e-12), max=1.0)


def adversary(model: torch.nn.Module, forget: torch.Tensor, params: Params, setting: ModuleType) -> torch.Tensor:
    """The PGD perturbation (no gradient) that lowers CE(forget) the most within the ball."""
    base = unwrap(model)
    hidden = base.config.hidden_size
    delta = torch.zeros(*forget.shape, hidden, device=forget.device, requires_grad=True)
    for _ in range(params.pgd_steps):
        with perturbed(model, params, delta):
            toward = setting.answer_loss(model(input_ids=forget).logits, forget)
        (grad,) = torch.autograd.grad(toward, delta)
        step = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        delta = project(delta.detach() - params.pgd_step * params.epsilon * step, params.epsilon).requires_grad_(True)
    return delta.detach()


def away_loss(logits: torch.Tensor, tokens: torch.Tensor, setting: ModuleType) -> torch.Tensor:
    """−mean log(1 − p(target)) over the answer targets, as log Σ_{v≠y} e^{z_v} − log Σ_v e^{z_v}
    (exact where p → 1, where log(1 − e^{−CE}) loses every digit)."""
    z = setting.answer_logits(logits).float()
    y = setting.answer_targets(tokens)
    others = z.scatter(-1, y.unsqueeze(-1), float("-inf")).logsumexp(-1)
    return -(others - z.logsumexp(-1)).mean()


def loss(model, forget: torch.Tensor, retain: torch.Tensor, params: Params, setting: ModuleType, state=None) -> torch.Tensor:
    """The away loss on the forget batch under the adversary's δ, plus λ·CE(retain)."""
    delta = adversary(model, forget, params, setting)
    with perturbed(model, params, delta):
        away = away_loss(model(input_ids=forget).logits, forget, setting)
    return away + params.lam * setting.answer_loss(model(input_ids=retain).logits, retain)
