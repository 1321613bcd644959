"""Attack family `ablate`: directional ablation, training-free.

Arditi et al. 2024 ("Refusal in language models is mediated by a single direction") remove a
behaviour by projecting one direction — the difference of mean activations between two sets
of inputs — out of the residual stream at every layer; Łucki et al. 2024 ("An adversarial
perspective on machine unlearning for AI safety") recover RMU-unlearned knowledge this way:
RMU's suppression is a large vector added to the activations of forget inputs.

Directions, at the decoder layer at ``depth`` (0: the first, 1: the last), from rows of T and of
retain data only (never V): the first is the difference of the mean activation over the real
tokens of forget rows and of retain rows (normalised); further ones (``k`` > 1) are the top
right-singular vectors of the per-row mean forget activations minus the retain mean, after the
first is projected out. Ablation: h ← h − (h Q) Qᵀ (Q the orthonormal directions) on the output
of the input embeddings (token and, where the model adds them, position embeddings) and of every
decoder layer, by forward hooks: no weight changes.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

import torch
from pydantic import Field

from trainables import compute
from trainables.families import _base
from trainables.families._base import calibration_rows
from trainables.methods import rmu
from trainables.strict import Strict

CITATION = "Arditi et al. 2024 (difference-in-means directions); Łucki et al. 2024 (ablation recovers RMU)"
STAGE = "ablate"
SEEDED = True  # the calibration rows are a seeded draw
TRAINING_FREE = True


class Spec(Strict):
    """One ablation: ``k`` directions found at the decoder layer at ``depth`` (a fraction of the
    network's depth) from ``calibration`` rows of T and of retain data."""

    setting: dict
    load: dict = {}
    depth: float = Field(1.0, ge=0, le=1)
    k: int = Field(1, ge=1, le=64)
    calibration: int = Field(64, ge=2)
    seed: int = 0


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def row_means(model: torch.nn.Module, layer: int, rows: torch.Tensor, pad_id: int | None,
              batch_size: int = 32) -> torch.Tensor:
    """Each row's mean activation over its real tokens at the output of decoder layer ``layer``, (N, d)."""
    layers = rmu.decoder_layers(model, rmu.Params())
    seen = {}
    handle = layers[layer].register_forward_hook(lambda m, a, out: seen.__setitem__("h", _hidden(out)))
    dev = next(model.parameters()).device
    out = []
    try:
        for chunk in rows.split(batch_size):
            real = torch.ones_like(chunk, dtype=torch.bool) if pad_id is None else chunk != pad_id
            model(input_ids=chunk.to(dev), attention_mask=real.long().to(dev))
            w = real.to(dev, torch.float32)[..., None]
            out.append(((seen["h"].float() * w).sum(1) / w.sum(1).clamp(min=1)).cpu())
    finally:
        handle.remove()
    return torch.cat(out)


def directions(forget: torch.Tensor, retain: torch.Tensor, k: int) -> torch.Tensor:
    """(d, k) orthonormal directions from per-row mean activations of forget and retain rows:
    the normalised difference of their means, then the top singular directions of the forget
    rows' offsets from the retain mean with the first projected out."""
    mu_r = retain.mean(0)
    first = forget.mean(0) - mu_r
    first = first / first.norm().clamp(min=1e-12)
    q = first[:, None]
    if k > 1:
        offsets = forget - mu_r
        offsets = offsets - (offsets @ first)[:, None] * first
        _, _, vh = torch.linalg.svd(offsets, full_matrices=False)  # rows orthonormal, each ⟂ first
        q = torch.cat([q, vh[: k - 1].T], 1)
    return q


def embedding_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules whose outputs are summed into the residual stream before the first layer:
    the token embeddings and learned position embeddings (GPT-2's ``wpe``) where there are any."""
    base = models_base(model)
    found = [model.get_input_embeddings()]
    for name in ("wpe", "embed_positions"):
        if isinstance(getattr(base, name, None), torch.nn.Embedding):
            found.append(getattr(base, name))
    return found


def models_base(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, getattr(model, "base_model_prefix", ""), model)


@contextlib.contextmanager
def projected_out(model: torch.nn.Module, q: torch.Tensor) -> Iterator[torch.nn.Module]:
    """``model`` with the directions ``q`` (d, k), orthonormal, projected out of the embeddings'
    and every decoder layer's output for the block."""
    def hook(module, args, output):
        h = _hidden(output)
        qq = q.to(h.device, h.dtype)
        h = h - (h @ qq) @ qq.T
        return (h, *output[1:]) if isinstance(output, tuple) else h

    modules = [*embedding_modules(model), *rmu.decoder_layers(model, rmu.Params())]
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def applied(model: torch.nn.Module, spec: Spec, d=None) -> Iterator[torch.nn.Module]:
    """``model`` with the directions found on ``d``'s T and retain rows ablated for the block."""
    pad = getattr(d, "pad_id", None)
    layer = round(spec.depth * (len(rmu.decoder_layers(model, rmu.Params())) - 1))
    forget = row_means(model, layer, calibration_rows(d.forget_T, spec.calibration, spec.seed), pad)
    retain = row_means(model, layer, calibration_rows(d.retain_train, spec.calibration, spec.seed + 1), pad)
    with projected_out(model, directions(forget, retain, spec.k)) as m:
        yield m


def flops(model: torch.nn.Module, spec: Spec, d) -> float:
    """Two calibration passes (forget and retain rows) of the data's row width each."""
    return 2 * compute.forward_flops(sum(p.numel() for p in model.parameters()), spec.calibration * d.forget_T.shape[1])


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path, model: torch.nn.Module | None = None) -> dict:
    """Ablate the directions from ``inputs['model']``'s residual stream and score it once."""
    return _base.run(sys.modules[__name__], spec, inputs, model)
