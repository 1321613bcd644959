"""Compute accounting: FLOPs ≈ 6·N·tokens for a training step, 2·N·tokens forward only."""

from __future__ import annotations


def train_flops(n_params: int, tokens: int) -> float:
    """Forward + backward FLOPs of training on ``tokens`` tokens."""
    return 6.0 * n_params * tokens


def forward_flops(n_params: int, tokens: int) -> float:
    """Forward-only FLOPs (evaluation, frozen teachers)."""
    return 2.0 * n_params * tokens


def training_result(model, metrics: dict, curve: list, train_tokens: int, wall_s: float) -> dict:
    """The result dict every training stage returns."""
    n = sum(p.numel() for p in model.parameters())  # the N of 6·N·tokens
    return {
        "metrics": metrics,
        "curve": curve,
        "flops": train_flops(n, train_tokens),
        "n_params": n,
        "train_wall_s": wall_s,
    }
