"""What every defence stage's spec takes from the experiment, whichever stage it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REFERENCE, SUPPRESSED = "reference", "suppressed"  # where a defender pipeline step's input comes from


@dataclass(frozen=True)
class Common:
    """The experiment's setting (its dump), how checkpoints load, the seed and the reference's
    pre-training forget fraction (the mix a distillation trains on)."""

    setting: dict[str, Any]
    load: dict[str, Any]
    seed: int
    forget_fraction: float
