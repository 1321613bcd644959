"""What every defence stage's spec takes from the experiment, whichever stage it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainables.loop import LoopConfig

REFERENCE, SUPPRESSED = "reference", "suppressed"  # where a defender pipeline step's input comes from


@dataclass(frozen=True)
class Common:
    """The experiment's setting (its dump), how checkpoints load, the seed and the reference's
    pre-training forget fraction (the mix a distillation trains on)."""

    setting: dict[str, Any]
    load: dict[str, Any]
    seed: int
    forget_fraction: float


def split_params(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Values → (loop settings, the rest: a stage's own hyperparameters)."""
    keys = set(LoopConfig.model_fields)
    return ({k: v for k, v in values.items() if k in keys}, {k: v for k, v in values.items() if k not in keys})
