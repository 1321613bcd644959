"""Attack family `quantize`: post-training weight quantization, as a deployer would apply it.

Zhang et al. (ICLR 2025, "Catastrophic failure of LLM unlearning via quantization") find that
unlearning under a utility constraint moves weights by less than a 4-bit bucket, so a quantized
unlearned model rounds back to the original: 4-bit quantization raised retained forgotten
knowledge from 21 % to 83 % on average. The attacker has no data and trains nothing; the
quantized model is scored like every attack (one evaluation, chosen on V_sel, reported on V_rep).

Schemes, simulated in floating point (quantize, then dequantize) so they run on any device:

* ``sym``: round-to-nearest, symmetric: per group, scale s = max|w| / (2^(b−1) − 1),
  q = clamp(round(w / s), −2^(b−1), 2^(b−1) − 1), w' = q·s (GPTQ's and AWQ's RTN baseline).
* ``asym``: round-to-nearest with a zero point: s = (max − min) / (2^b − 1),
  z = round(−min / s), q = clamp(round(w / s) + z, 0, 2^b − 1), w' = (q − z)·s.
* ``nf4``: the 16 NormalFloat levels of QLoRA (Dettmers et al. 2023, bitsandbytes' table),
  absmax-scaled per group, each weight to its nearest level (``bits`` is 4).

Groups are runs of ``group`` consecutive input features of one output channel (0: the whole
channel, "per channel"). What a deployer quantizes: every linear layer of the network (GPT-2's
``Conv1D`` too) but the output head and anything tied to the embeddings, which stay in full
precision (bitsandbytes' and GPTQ's default).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Literal

import torch
from pydantic import Field, model_validator

from trainables.families import _base
from trainables.families._base import restored
from trainables.strict import Strict

CITATION = "Zhang et al., ICLR 2025, Catastrophic failure of LLM unlearning via quantization"
STAGE = "quantize"
SEEDED = False  # deterministic: a re-run gives the same model
TRAINING_FREE = True

# QLoRA's NF4 levels (Dettmers et al. 2023, Appendix E; bitsandbytes ``get_4bit_type('nf4')``)
NF4 = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0)


class Spec(Strict):
    """One quantization of the released model: ``scheme`` sym | asym | nf4, ``bits`` (2–8;
    nf4 is always 4), ``group`` input features per scale (0: per output channel)."""

    setting: dict
    load: dict = {}
    scheme: Literal["sym", "asym", "nf4"] = "sym"
    bits: int = Field(4, ge=2, le=8)
    group: int = Field(128, ge=0)
    seed: int = 0  # unused (deterministic); kept so every family's spec reads alike

    @model_validator(mode="after")
    def _nf4(self) -> "Spec":
        if self.scheme == "nf4":
            self.bits = 4  # NF4's 16 levels: a searched bit width means nothing for it
        return self


def _groups(w: torch.Tensor, group: int) -> tuple[torch.Tensor, int]:
    """``w`` (out, in) as (out, n_groups, group), zero-padded on the right, and the padding."""
    out_f, in_f = w.shape
    g = in_f if group in (0, None) or group >= in_f else group
    pad = (-in_f) % g
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.view(out_f, -1, g), pad


def quantize_tensor(w: torch.Tensor, scheme: str, bits: int, group: int) -> torch.Tensor:
    """``w`` (out, in) quantized and dequantized group-wise along its input features, in
    float32, returned in ``w``'s dtype. A group of zeros stays zero."""
    x, pad = _groups(w.detach().float(), group)
    if scheme == "sym":
        qmax = 2 ** (bits - 1) - 1
        s = x.abs().amax(-1, keepdim=True) / qmax
        s = torch.where(s > 0, s, torch.ones_like(s))
        y = torch.clamp(torch.round(x / s), -qmax - 1, qmax) * s
    elif scheme == "asym":
        qmax = 2**bits - 1
        lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
        s = (hi - lo) / qmax
        s = torch.where(s > 0, s, torch.ones_like(s))
        z = torch.round(-lo / s)
        y = (torch.clamp(torch.round(x / s) + z, 0, qmax) - z) * s
    elif scheme == "nf4":
        levels = torch.tensor(NF4, dtype=torch.float32, device=x.device)
        absmax = x.abs().amax(-1, keepdim=True)
        absmax = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
        idx = (x / absmax).unsqueeze(-1).sub(levels).abs().argmin(-1)  # nearest level; ties: the lower
        y = levels[idx] * absmax
    else:
        raise ValueError(f"scheme: one of sym, asym, nf4, got {scheme!r}")
    y = y.reshape(w.shape[0], -1)
    return (y[:, : w.shape[1]] if pad else y).to(w.dtype)


def quantized_weights(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter, bool]]:
    """(name, weight, transposed) of every linear layer a deployer quantizes: ``nn.Linear`` and
    GPT-2's ``Conv1D`` (stored (in, out): ``transposed``), but the output head, weights
    shared with the input embeddings and LoRA adapters (QLoRA's deployment: a quantized base,
    adapters in full precision)."""
    from transformers.pytorch_utils import Conv1D

    embed = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out = []
    for name, module in model.named_modules():
        # by class, not class name: peft's LoRA wrapper is also called ``Linear`` and exposes its
        # base layer's weight, which would be listed twice (and as untransposed over a Conv1D)
        if not isinstance(module, (torch.nn.Linear, Conv1D)) or module is head or module.weight is embed or ".lora_" in name:
            continue
        out.append((name, module.weight, isinstance(module, Conv1D)))
    return out


@contextlib.contextmanager
def applied(model: torch.nn.Module, spec: Spec, d=None) -> Iterator[torch.nn.Module]:
    """``model`` with its linear weights quantized for the block; the weights as they were after.
    (``d``, the setting's data, is not needed: every family's ``applied`` takes it.)"""
    layers = quantized_weights(model)
    with restored(w for _, w, _ in layers), torch.no_grad():
        for _, w, transposed in layers:
            q = quantize_tensor(w.t() if transposed else w, spec.scheme, spec.bits, spec.group)
            w.copy_(q.t() if transposed else q)
        yield model


def flops(model: torch.nn.Module, spec: Spec | None = None, d=None) -> float:
    """What quantizing costs: a few operations per quantized weight (no forward pass; neither
    ``spec`` nor the data ``d`` matter)."""
    return 8.0 * sum(w.numel() for _, w, _ in quantized_weights(model))


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path, model: torch.nn.Module | None = None) -> dict:
    """Quantize ``inputs['model']`` and score it (V_sel, V_rep, retain) once; nothing is kept."""
    return _base.run(sys.modules[__name__], spec, inputs, model)
