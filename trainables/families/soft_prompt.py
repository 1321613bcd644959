"""Attack family `soft_prompt`: an embedding-space attack. ``tokens`` trainable input embeddings
are prepended to every question and optimised on T by gradient descent; no weight changes.

Schwinn et al. 2024 ("Soft prompt threats: attacking safety alignment and unlearning in
open-source LLMs through the embedding space") recover unlearned knowledge this way; TamperBench
ships it as its embedding attack (20 soft tokens, 100 steps, lr 1e-3), the informed start here.
Lester et al. 2021 is the prompt-tuning method it borrows.

The soft tokens start as the input embeddings of tokens drawn (seeded) from T's rows and are
trained with Adam on the answer loss of T batches (the answer letter only on ``wmdp`` question
rows, as the fine-tune's ``loss_on: answer``), the model frozen. Scored like a fine-tune:
evaluations every ``eval_every`` steps with the soft prompt in front, the checkpoint chosen on
V_sel and reported on V_rep.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from trainables import loop, models, settings
from trainables.families import _base
from trainables.families._context import Prepended, token_pool
from trainables.strict import Strict

CITATION = "Schwinn et al. 2024 (soft prompt threats); Lester et al. 2021 (prompt tuning)"
STAGE = "soft_prompt"
SEEDED = True
TRAINING_FREE = False
CONTEXT = True  # needs positions before the question (search/attack_families.py context_room)


class Spec(Strict):
    """One soft-prompt attack: ``tokens`` embeddings, Adam at ``lr`` for ``steps`` steps of
    ``batch_size`` T rows, evaluated every ``eval_every`` steps. ``stop_at`` / ``max_flops``:
    as the fine-tune's (a re-run to its checkpoint; the budget left)."""

    setting: dict
    load: dict = {}
    tokens: int = Field(20, ge=1, le=1024)
    lr: float = Field(1e-3, gt=0)
    steps: int = Field(100, ge=1, le=10_000_000)
    batch_size: int = Field(64, ge=1)
    eval_every: int = Field(20, ge=1)
    stop_at: int | None = None
    max_flops: float | None = None
    seed: int = 0


def flops_per_step(model: torch.nn.Module, tokens: int) -> float:
    """A forward pass and the backward pass to the input embeddings (no weight gradients): 4·N
    per token, the soft tokens counted."""
    return 4.0 * sum(p.numel() for p in model.parameters()) * tokens


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path, model: torch.nn.Module | None = None) -> dict:
    """Optimise the soft prompt against ``inputs['model']``; nothing is kept but scores."""
    spec = Spec.model_validate(spec)
    model = models.load(inputs["model"], spec.load) if model is None else model
    setting, d = settings.load(spec.setting)
    return soft_prompt(model, spec, setting, d)


def initial(model: torch.nn.Module, tokens: torch.Tensor, n: int, pad_id: int | None, seed: int) -> torch.Tensor:
    """The soft tokens' start: the input embeddings of ``n`` tokens drawn from ``tokens`` (T)."""
    pool = token_pool(tokens, pad_id)
    ids = pool[torch.randint(len(pool), (n,), generator=torch.Generator().manual_seed(seed))]
    emb = model.get_input_embeddings()
    return emb(ids.to(emb.weight.device)).detach().float().clone()


def soft_prompt(model: torch.nn.Module, spec: Spec, setting, d) -> dict:
    """The attack on a loaded ``model`` with the setting's functions and data; the model is left
    as it was (weights and their ``requires_grad``)."""
    model.to(loop.device())
    gen = torch.Generator().manual_seed(spec.seed)
    u = initial(model, d.forget_T, spec.tokens, getattr(d, "pad_id", None), spec.seed).requires_grad_()
    per_step = flops_per_step(model, spec.batch_size * (spec.tokens + d.forget_T.shape[1]))
    return _base.optimised(Prepended(model, u), [u], spec, setting, d, per_step, gen)
