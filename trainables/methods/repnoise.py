"""RepNoise (Representation Noising): push the forget data's representations toward Gaussian
noise at every layer, so that fine-tuning on that data has little to recover from.

loss = CE(retain) + β · mean_ℓ MMD(h_ℓ(forget), N(0, I)) − α · log(1 + mean_j CE_j(forget))

h_ℓ is the MLP output of decoder layer ℓ at the answer-predicting positions, flattened per
example; MMD is the biased estimate mean(K_XX + K_YY − K_XY − K_YX) with a sum of five Gaussian
kernels whose bandwidths are the mean pairwise squared distance of the pooled samples (no
gradient) × 2^k / 4, k = 0…4; the noise is drawn fresh each step. CE_j is the answer
cross-entropy read from hidden state j through the final norm and the unembedding (the
logit lens; j = the last gives the model's logits), averaged over the n_layer + 1 states: the
log makes the ascent term bounded in its pull. As the authors' ``rep_noise_loss``
(``representation_noising/loss.py``): MLP activations, the five-kernel MMD, the log-ascent over
every layer's read-out; they sum the final logits' CE and every hidden state's (the last one
normed twice) over n_layer + 1 — here each state once, a mean.

Reference: Rosati et al. 2024, "Representation noising: A defence mechanism against harmful
finetuning" (NeurIPS), code ``domenicrosati/representation-noising`` (Llama-2-7B: β 0.001, α
1, lr 2e-5). The arithmetic defaults below are calibrated for 0.4 M-parameter models.
"""

from __future__ import annotations

from types import ModuleType

import torch
from pydantic import Field

from trainables.methods._shared import all_parameters as trainable  # noqa: F401
from trainables.methods._shared import no_setup as setup  # noqa: F401
from trainables.methods._shared import unwrap
from trainables.methods.rmu import decoder_layers
from trainables.strict import Strict

CITATION = "Rosati et al. 2024, Representation noising (RepNoise), domenicrosati/representation-noising"
LOSS = (
    "CE(r) + β·mean_ℓ MMD(h_ℓ(f), N(0, I)) − α·log(1 + mean_j CE_j(f)); h_ℓ: layer ℓ's MLP output"
    " at the answer positions, MMD with five Gaussian kernels; CE_j: the answer CE read from "
    "hidden state j through the final norm and unembedding"
)
DEFAULT_LOOP = {"lr": 1e-3, "steps": 150}


class Params(Strict):
    """RepNoise's hyperparameters (the loop's lr and steps are searched beside them)."""

    alpha: float = Field(1.0, ge=0, description="weight of the bounded ascent on the forget data")
    beta: float = Field(1.0, ge=0, description="weight of the MMD toward Gaussian noise")
    layers_path: str | None = None  # decoder layers' module path; None: found as for RMU


def mmd(x: torch.Tensor, y: torch.Tensor, kernels: int = 5, mul: float = 2.0) -> torch.Tensor:
    """Biased MMD² between samples ``x`` (n, d) and ``y`` (n, d) under a sum of ``kernels``
    Gaussian kernels exp(−‖a − b‖² / s_k), s_k = m · mul^k / mul^(kernels // 2), m the mean
    squared distance between distinct pooled samples (held constant)."""
    n = x.shape[0]
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    m = d2.detach().sum() / (z.shape[0] ** 2 - z.shape[0])
    base = m / mul ** (kernels // 2)
    k = sum(torch.exp(-d2 / (base * mul**i)) for i in range(kernels))
    return (k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n]).mean()


def _final_norm(base: torch.nn.Module) -> torch.nn.Module:
    inner = base.base_model
    norm = getattr(inner, "ln_f", None) or getattr(inner, "norm", None) or getattr(inner, "final_layer_norm", None)
    if norm is None:
        raise ValueError("RepNoise: no final norm (ln_f / norm) on the base model")
    return norm


def loss(model, forget: torch.Tensor, retain: torch.Tensor, params: Params, setting: ModuleType, state=None) -> torch.Tensor:
    """CE(retain) + β·noise − α·log(1 + lens CE(forget))."""
    base = unwrap(model)
    layers = decoder_layers(base, params)
    mlp_out: list[torch.Tensor] = []
    hooks = [layer.mlp.register_forward_hook(lambda m, a, out: mlp_out.append(out)) for layer in layers]
    try:
        out = model(input_ids=forget, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    noise = 0.0
    for h in mlp_out:
        x = setting.answer_logits(h).flatten(1).float()
        noise = noise + mmd(x, torch.randn_like(x))
    noise = noise / len(mlp_out)
    head, norm = base.get_output_embeddings(), _final_norm(base)
    lens = [setting.answer_loss(head(norm(h)), forget) for h in out.hidden_states[:-1]]
    ascent = torch.stack([*lens, setting.answer_loss(out.logits, forget)]).mean()
    ce_retain = setting.answer_loss(model(input_ids=retain).logits, retain)
    return ce_retain + params.beta * noise - params.alpha * torch.log1p(ascent)
