"""Attack family `prune`: zero a fraction of the released model's weights, chosen by a score.

Łucki et al. 2024 ("An adversarial perspective on machine unlearning for AI safety") recover
unlearned knowledge by pruning the neurons most important to the forget data relative to the
retain data: the unlearning's suppression lives in few units. Wanda (Sun et al. 2024, "A simple
and effective pruning approach for LLMs") scores a weight by |W_ij|·‖x_j‖₂, its magnitude times
the norm of its input feature on calibration data. Training-free; scored once like every attack.

Scores (the lowest are pruned):

* ``magnitude``: |W_ij|.
* ``wanda``: |W_ij|·‖x_j‖ over the retain rows (the calibration text).
* ``importance``: −|W_ij|·‖x_j^forget‖ / ‖x_j^retain‖: the weights used most by T relative to
  retain data go first (Łucki et al.'s forget-vs-retain importance, on activations).

Structure: ``unstructured`` prunes round(sparsity·n) weights of every output row of every linear
layer (Wanda's comparison group; the output head and tied embeddings are never pruned);
``neuron`` prunes round(sparsity·h) of the h hidden units of every MLP, by zeroing their
weights in the MLP's output projection (a unit's score is the norm of that weight vector, times
its activation norms as above). Calibration reads T and retain rows only, never V.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Literal

import torch
from pydantic import Field

from trainables import compute
from trainables.families import _base
from trainables.families._base import calibration_rows, restored
from trainables.families.quantize import quantized_weights
from trainables.strict import Strict

CITATION = "Łucki et al. 2024, An adversarial perspective on machine unlearning for AI safety; Sun et al. 2024 (Wanda)"
STAGE = "prune"
SEEDED = True  # the calibration rows are a seeded draw (magnitude pruning ignores them)
TRAINING_FREE = True

MLP_OUT = ("mlp.down_proj", "mlp.c_proj", "mlp.fc2", "mlp.dense_4h_to_h")  # Llama/Gemma, GPT-2, OPT, NeoX


class Spec(Strict):
    """One pruning: ``score`` magnitude | wanda | importance, ``structure`` unstructured |
    neuron, ``sparsity`` (the pruned fraction), ``calibration`` rows of T and of retain data."""

    setting: dict
    load: dict = {}
    score: Literal["magnitude", "wanda", "importance"] = "wanda"
    structure: Literal["unstructured", "neuron"] = "unstructured"
    sparsity: float = Field(0.1, gt=0, lt=1)
    calibration: int = Field(64, ge=1)
    seed: int = 0


def lowest(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mask (bool, like ``scores``) of the round(fraction·n) lowest scores of every row
    (``scores`` (rows, n)); ties go to the lower index (a stable sort)."""
    k = round(fraction * scores.shape[-1])
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        idx = torch.sort(scores, dim=-1, stable=True).indices[..., :k]
        mask.scatter_(-1, idx, True)
    return mask


def mlp_outputs(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter, bool]]:
    """(name, weight, transposed) of every MLP output projection, the hidden units as the
    weight's input features."""
    return [(n, w, t) for n, w, t in quantized_weights(model) if n.endswith(MLP_OUT)]


def input_norms(model: torch.nn.Module, names: list[str], rows: torch.Tensor, pad_id: int | None,
                batch_size: int = 32) -> dict[str, torch.Tensor]:
    """‖x_j‖₂ of every input feature j of the layers ``names`` over the real tokens of ``rows``."""
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    mask: list[torch.Tensor] = []

    def hook(name):
        def fn(module, args):
            x = args[0].detach().float()
            m = mask[0].to(x.device, x.dtype)[..., None]
            sums[name] = sums.get(name, 0) + (x.square() * m).sum(tuple(range(x.dim() - 1)))
        return fn

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    dev = next(model.parameters()).device
    try:
        with torch.no_grad():
            for chunk in rows.split(batch_size):
                real = torch.ones_like(chunk, dtype=torch.bool) if pad_id is None else chunk != pad_id
                mask[:] = [real]
                model(input_ids=chunk.to(dev), attention_mask=real.long().to(dev))
    finally:
        for h in handles:
            h.remove()
    return {n: s.sqrt() for n, s in sums.items()}


def masks(model: torch.nn.Module, spec: Spec, forget: torch.Tensor | None = None, retain: torch.Tensor | None = None,
          pad_id: int | None = None) -> dict[str, torch.Tensor]:
    """Name → pruning mask in the weight's own layout (True: set to zero). ``forget`` /
    ``retain``: calibration rows (wanda reads retain, importance both)."""
    layers = quantized_weights(model) if spec.structure == "unstructured" else mlp_outputs(model)
    if not layers:
        raise ValueError(f"prune: no {'MLP output projections' if spec.structure == 'neuron' else 'linear layers'} found")
    names = [n for n, _, _ in layers]
    norm_r = input_norms(model, names, retain, pad_id) if spec.score != "magnitude" else {}
    norm_f = input_norms(model, names, forget, pad_id) if spec.score == "importance" else {}
    out = {}
    for name, w, transposed in layers:
        w_oi = (w.t() if transposed else w).detach().float().abs()  # (out, in)
        if spec.structure == "neuron":
            w_oi = w_oi.norm(dim=0, keepdim=True)  # one score per hidden unit (input feature)
        s = w_oi
        if spec.score == "wanda":
            s = w_oi * norm_r[name]
        elif spec.score == "importance":
            s = -w_oi * norm_f[name] / norm_r[name].clamp(min=1e-12)
        m = lowest(s, spec.sparsity)
        if spec.structure == "neuron":  # a unit's whole weight vector
            m = m.expand((w.shape[1] if transposed else w.shape[0]), -1)
        out[name] = m.t() if transposed else m
    return out


@contextlib.contextmanager
def applied(model: torch.nn.Module, spec: Spec, d=None) -> Iterator[torch.nn.Module]:
    """``model`` pruned for the block (calibration rows from the setting's data ``d``); the
    weights as they were after."""
    pad = getattr(d, "pad_id", None)
    forget = calibration_rows(d.forget_T, spec.calibration, spec.seed) if d is not None else None
    retain = calibration_rows(d.retain_train, spec.calibration, spec.seed + 1) if d is not None else None
    found = masks(model, spec, forget, retain, pad)
    weights = {n: w for n, w, _ in quantized_weights(model)}
    with restored(weights[n] for n in found), torch.no_grad():
        for name, m in found.items():
            weights[name].masked_fill_(m.to(weights[name].device), 0)
        yield model


def flops(model: torch.nn.Module, spec: Spec, d) -> float:
    """Calibration forward passes (the data's row width per row; none for magnitude) and the scoring."""
    n = sum(p.numel() for p in model.parameters())
    passes = {"magnitude": 0, "wanda": 1, "importance": 2}[spec.score]
    return passes * compute.forward_flops(n, spec.calibration * d.forget_T.shape[1]) + 4.0 * n


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path, model: torch.nn.Module | None = None) -> dict:
    """Prune ``inputs['model']`` and score it once; nothing is kept."""
    return _base.run(sys.modules[__name__], spec, inputs, model)
