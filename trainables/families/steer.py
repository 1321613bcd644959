"""Attack family `steer`: a test-time latent adversary. One vector, added to the residual
stream at one layer at every position, is optimised on T by gradient descent within a norm
bound; no weight changes.

Che et al. 2025 ("Model tampering attacks enable more rigorous evaluations of LLM
capabilities") find latent-space attacks among the strongest tampering attacks on unlearned
models; a steering vector is the simplest of them (Turner et al. 2023, activation addition;
here learned, as in latent adversarial training's adversary, Sheshadri et al. 2024). RMU's
suppression is itself a vector added to forget activations, which one vector can cancel.

The vector is v = u · min(1, b / ‖u‖) with b = ``bound`` × the mean norm of the residual stream
at the layer over T's tokens (scales differ by model and layer), u trained with Adam on the
answer loss of T batches (the answer letter only on ``wmdp`` question rows, as the fine-tune's
``loss_on: answer``). Scored like a fine-tune: evaluations every ``eval_every`` steps, the
checkpoint chosen on V_sel and reported on V_rep.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from trainables import loop, models, settings
from trainables.families import _base
from trainables.families.ablate import _hidden, row_means
from trainables.methods import rmu
from trainables.strict import Strict

CITATION = "Che et al. 2025 (latent-space tampering); Turner et al. 2023 (activation addition)"
STAGE = "steer"
SEEDED = True
TRAINING_FREE = False


class Spec(Strict):
    """One steering attack: the layer at ``depth`` (0: first, 1: last), the norm ``bound`` (× the
    mean residual norm there), Adam at ``lr`` for ``steps`` steps of ``batch_size`` T rows,
    evaluated every ``eval_every`` steps. ``stop_at`` / ``max_flops``: as the fine-tune's (a
    re-run to its checkpoint; the budget left)."""

    setting: dict
    load: dict = {}
    depth: float = Field(0.5, ge=0, le=1)
    bound: float = Field(1.0, gt=0)
    lr: float = Field(1e-2, gt=0)
    steps: int = Field(100, ge=1, le=10_000_000)
    batch_size: int = Field(64, ge=1)
    eval_every: int = Field(20, ge=1)
    stop_at: int | None = None
    max_flops: float | None = None
    seed: int = 0


def flops_per_step(model: torch.nn.Module, tokens: int) -> float:
    """A forward pass and the backward pass to the activations (no weight gradients): 4·N per token."""
    return 4.0 * sum(p.numel() for p in model.parameters()) * tokens


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path, model: torch.nn.Module | None = None) -> dict:
    """Optimise the steering vector against ``inputs['model']``; nothing is kept but scores."""
    spec = Spec.model_validate(spec)
    model = models.load(inputs["model"], spec.load) if model is None else model
    setting, d = settings.load(spec.setting)
    return steer(model, spec, setting, d)


def steer(model: torch.nn.Module, spec: Spec, setting, d) -> dict:
    """The attack on a loaded ``model`` with the setting's functions and data (``d.forget_T``
    to train on, ``setting.score(model, d)`` to evaluate); the model is left as it was."""
    model.to(loop.device())
    dev = loop.device()
    layers = rmu.decoder_layers(model, rmu.Params())
    layer = round(spec.depth * (len(layers) - 1))
    gen = torch.Generator().manual_seed(spec.seed)
    calib = d.forget_T[torch.randperm(len(d.forget_T), generator=gen)[:64]]
    norm = row_means_norm(model, layer, calib, getattr(d, "pad_id", None))
    u = torch.zeros(model.config.hidden_size, device=dev, requires_grad=True)
    bound = spec.bound * norm

    def add(module, args, output):
        v = u * torch.clamp(bound / u.norm().clamp(min=1e-12), max=1.0)
        h = _hidden(output) + v.to(_hidden(output).dtype)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    per_step = flops_per_step(model, spec.batch_size * d.forget_T.shape[1])
    handle = layers[layer].register_forward_hook(add)
    try:
        return _base.optimised(model, [u], spec, setting, d, per_step, gen)
    finally:
        handle.remove()


def row_means_norm(model: torch.nn.Module, layer: int, rows: torch.Tensor, pad_id: int | None) -> float:
    """The mean norm of the residual stream at ``layer`` over ``rows``' real tokens (per-row means
    of the norms would need every token; the norm of each row's mean is a close, cheap stand-in)."""
    return row_means(model, layer, rows, pad_id).norm(dim=1).mean().item()
