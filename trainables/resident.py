"""A released model kept in memory across the attacks on it: loaded once, its weights restored
bit for bit after every attack, so an attack's fixed cost is a restore (milliseconds on a small
model; a 7B model's 14.5 GB at host-to-device speed on a GPU) instead of a load, and — under
Ray Train — a worker-group start (tens of seconds). ``search/runner.py`` runs these inside
Ray actors; without Ray, an adversary search keeps one per concurrent attack in its process.
An attack borrows the model (``lent``) and is run on it by the stage's own ``run``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from trainables import loop, models


class ResidentModel:
    """One released model, loaded once onto this process's device, and the attacks run on it."""

    def __init__(self, path: str, load_options: dict):
        self.path, self.load_options = path, dict(load_options)
        self.model = models.load(path, load_options).to(loop.device())
        # The saved weights stay off the accelerator: host memory, pinned where a GPU copies from it.
        pin = loop.device().type == "cuda"
        self.saved = [p.detach().to("cpu", copy=True) for p in self.model.parameters()]
        if pin:
            self.saved = [t.pin_memory() for t in self.saved]
        self.wants_grad = [p.requires_grad for p in self.model.parameters()]

    def restore(self) -> None:
        """The released model again: weights, gradients, grad flags and mode as loaded."""
        with torch.no_grad():
            for p, saved, wants in zip(self.model.parameters(), self.saved, self.wants_grad):
                p.copy_(saved, non_blocking=True)
                p.grad = None
                p.requires_grad_(wants)
        if loop.device().type == "cuda":
            torch.cuda.synchronize()
        self.model.eval()

    @contextlib.contextmanager
    def lent(self, load_options: dict) -> Iterator[torch.nn.Module]:
        """The model, for one attack that asks for it with ``load_options`` (they must be the
        ones it was loaded with); restored when the attack ends, whatever happened."""
        if load_options != self.load_options:
            raise ValueError("resident model: an attack asked for other load options than the model was loaded with")
        try:
            yield self.model
        finally:
            self.restore()
