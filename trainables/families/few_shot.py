"""Attack family `few_shot`: in-context relearning. ``shots`` solved examples of the forget task,
a seeded draw from T (never V), are placed before every question; no weight changes.

Deeb & Roger 2024 and Łucki et al. 2024 test whether "unlearned" knowledge comes back when the
model is shown related facts in its context rather than trained on them; TamperBench and Che et
al. 2025 count in-context attacks among the cheap ones. On the ``wmdp`` setting an example is one
of T's question rows with its answer letter (the header, question, choices and answer, as
lm-evaluation-harness's few-shot MMLU prompt has them; each row keeps the tokenizer's own
start-of-text token, so examples are separated as the tokenizer separates documents); on
``arithmetic`` it is one solved problem (``007*012=084``), examples written back to back.
Training-free: one scoring of the model with the context in front (the context's keys and values
computed once and attended by every question).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

import torch
from pydantic import Field

from trainables.families import _base
from trainables.families._context import Prepended, context_flops, learned_positions, real_tokens, row_width
from trainables.strict import Strict

CITATION = "Łucki et al. 2024 (in-context relearning); Brown et al. 2020 (k-shot prompting)"
STAGE = "few_shot"
SEEDED = True  # the examples are a seeded draw from T
TRAINING_FREE = True
CONTEXT = True  # needs positions before the question (search/attack_families.py context_room)


class Spec(Strict):
    """``shots`` solved examples of T, drawn with ``seed``, before every scored question (fewer
    where a model's learned positions run out: ``fitted``)."""

    setting: dict
    load: dict = {}
    shots: int = Field(5, ge=1, le=256)
    seed: int = 0


def examples(forget_T: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """The indices into T of the ``shots`` examples (a seeded draw without replacement)."""
    return torch.randperm(len(forget_T), generator=torch.Generator().manual_seed(seed))[:shots]


def context(d, spec: Spec, room: int | None = None) -> list[torch.Tensor]:
    """The examples placed before each question: the chosen T rows without their padding, in
    draw order; only as many as fit in ``room`` tokens (None: all ``shots``)."""
    pad = getattr(d, "pad_id", None)
    out, used = [], 0
    for i in examples(d.forget_T, spec.shots, spec.seed):
        row = real_tokens(d.forget_T[i], pad)
        if room is not None and used + len(row) > room:
            break
        out.append(row)
        used += len(row)
    return out


def fitted(model: torch.nn.Module, spec: Spec, d) -> list[torch.Tensor]:
    """The examples that fit before the widest scored row in the positions a model learned
    (GPT-2's table; fewer than ``shots`` where it runs out, none where the row fills it)."""
    n = learned_positions(model)
    return context(d, spec, None if n is None else n - row_width(d))


@contextlib.contextmanager
def applied(model: torch.nn.Module, spec: Spec, d) -> Iterator[torch.nn.Module]:
    """``model`` with the examples before every row, for the block (nothing in it changes)."""
    rows = fitted(model, spec, d)
    yield Prepended(model, torch.cat(rows)) if rows else model


def n_examples(model: torch.nn.Module, spec: Spec, d) -> int:
    """How many examples the model is shown (``shots``, or fewer: ``fitted``)."""
    return len(fitted(model, spec, d))


def flops(model: torch.nn.Module, spec: Spec, d) -> float:
    """What the context adds to one scoring: one forward pass over it, its keys and values kept,
    and every scored row's attention to them (``_context.context_flops``)."""
    n_rows = len(d.forget_V) + len(d.retain_eval)
    tokens = sum(len(r) for r in fitted(model, spec, d))
    return context_flops(model, tokens, n_rows * row_width(d)) if tokens else 0.0


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path, model: torch.nn.Module | None = None) -> dict:
    """Score ``inputs['model']`` with the examples in its context (V_sel, V_rep, retain) once."""
    return _base.run(sys.modules[__name__], spec, inputs, model)
