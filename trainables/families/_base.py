"""What the training-free attack families share: calibration rows, weights restored after a
block, the stage's run (transform, score once) and its result."""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Iterable, Iterator

import torch

from trainables import loop, models, settings


def calibration_rows(tokens: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """A seeded draw of ``n`` rows of ``tokens`` (T or retain data, never V)."""
    return tokens[torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))[:n]]


@contextlib.contextmanager
def restored(weights: Iterable[torch.Tensor]) -> Iterator[None]:
    """The block may change ``weights`` in place; they are as they were after it."""
    saved = [(w, w.detach().clone()) for w in weights]
    try:
        yield
    finally:
        with torch.no_grad():
            for w, old in saved:
                w.copy_(old)


def run(family: ModuleType, spec, inputs: dict[str, str], model: torch.nn.Module | None) -> dict:
    """A training-free family's stage: ``inputs['model']`` (or the loaded ``model``) on the
    stage's device, transformed by ``family.applied`` for one scoring; nothing is kept."""
    spec = family.Spec.model_validate(spec)
    model = models.load(inputs["model"], spec.load) if model is None else model
    model.to(loop.device())
    setting, d = settings.load(spec.setting)
    with family.applied(model, spec, d) as scored:  # the model itself, or a wrapper of it (few_shot)
        metrics = setting.score(scored, d)
    used = family.n_examples(model, spec, d) if hasattr(family, "n_examples") else 0
    return result(metrics, family.flops(model, spec, d), model, used)


def result(metrics: dict[str, float], cost: float, model: torch.nn.Module, n_examples: int = 0) -> dict:
    """The result dict of a training-free attack: one evaluation at step 0 (chosen on V_sel and
    reported on V_rep there, like a fine-tune's checkpoint), ``cost`` FLOPs, ``n_examples`` rows
    of T it showed the model (few_shot's)."""
    return {
        "metrics": {"forget_acc_sel_max": metrics["forget_acc_sel"], "best_step": 0,
                    "forget_acc_rep_at_best": metrics["forget_acc_rep"], "forget_acc_max": metrics["forget_acc"],
                    "forget_acc_final": metrics["forget_acc"], "retain_acc_final": metrics["retain_acc"]},
        "curve": [(0, k, v) for k, v in metrics.items()],
        "flops": cost, "n_params": sum(p.numel() for p in model.parameters()),
        "train_wall_s": 0.0, "steps": 0, "n_examples": n_examples,
    }
