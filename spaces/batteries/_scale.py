"""What several batteries share: the arithmetic setting's learning-rate scale and LoRA r 16 α 32."""

from __future__ import annotations

ARITHMETIC_LR_SCALE = 50  # arithmetic models pre-train at 3e-3, 50 × the rates real models are fine-tuned at
LORA_16_32 = {"lora_r": 16, "lora_alpha": 32.0, "lora_dropout": 0.0, "lora_targets": "all"}


def rate(lr: float, setting: str) -> float:
    """A paper's learning rate on ``setting``: × ``ARITHMETIC_LR_SCALE`` on arithmetic."""
    return round(lr * ARITHMETIC_LR_SCALE, 10) if setting == "arithmetic" else lr
