"""Batch sampling shared by every stage."""

from __future__ import annotations

import torch

from trainables.loop import device


def sampler(seed: int, rank: int = 0) -> torch.Generator:
    """A generator for batch draws; ranks of one DDP run draw different batches."""
    return torch.Generator().manual_seed(seed * 1_000_003 + rank)


def draw(tokens: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` rows of ``tokens`` drawn uniformly with replacement, on this process's device."""
    return tokens[torch.randint(len(tokens), (n,), generator=gen)].to(device())


def mix(a: torch.Tensor, b: torch.Tensor, n: int, frac_b: float, gen: torch.Generator) -> torch.Tensor:
    """A batch of ``n`` rows, ``round(n·frac_b)`` from ``b`` and the rest from ``a``."""
    nb = round(n * frac_b)
    return torch.cat([draw(a, n - nb, gen), draw(b, nb, gen)])
