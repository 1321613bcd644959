"""TAR: tamper-resistance training — first-order meta-learning against an inner-loop adversary.

Each outer step:
  1. snapshot the trained parameters to the CPU (only one extra copy of the weights — the
     accumulated tamper-resistance gradient — lives on the accelerator);
  2. for each of ``tasks_per_step`` sampled adversaries — a learning rate from a set or a
     log-uniform range, data "forget" (forget only) or "retain_forget" (retain until step
     ⌊Beta(6, 3)·K⌋, then forget) — run K fine-tuning steps with a fresh AdamW; after every
     ``subsample``-th step take the tamper-resistance loss L_TR (negative entropy of the
     next-token distribution on a held-out forget batch) at the adapted weights, scaled by
     ``grad_scale · exp(λ·(i − (K−1))) / tasks_per_step``, and add its gradient to the
     accumulator (first-order: the inner updates are not differentiated through); restore the
     snapshot after each adversary;
  3. add the gradient of the retain loss — NLL on retain + mean over layers of the mean L2
     distance of hidden states to the reference model — and take one outer optimizer step.

The outer step is one step of the project's training loop (``trainables/loop.py``): the loss it
gets is ``retain_scale·L_retain + Σ_p ⟨g_p, p − sg(p)⟩`` with g the accumulated tamper-resistance
gradient — a term whose value is 0 and whose gradient is exactly g — so the outer optimizer,
schedule, clipping and DDP all-reduce are the loop's own.

Reference: Tamirisa et al. 2024, "Tamper-Resistant Safeguards for Open-Weight LLMs",
arXiv 2408.00761; code ``modules/training.py::tar_training_loop`` and ``run_tar_bio.sh``
(Llama-3-8B: K = 64, adversary lrs {2e-6, 2e-5, 4e-5}, grad scale 4, λ = 0.0625,
subsample 4, one task per step, outer AdamW lr 2e-5 with 32 warmup steps, 750 steps; a third
of the adversaries retain-then-forget). Differences, and why: L_TR is masked to real tokens
(the authors' ``max_entropy_loss`` averages over padding too); on arithmetic the forget positions
are the answer positions, as everywhere in this project. The defaults below are scaled to the
0.4 M-parameter arithmetic models.

Stage ``tar``: inputs ``model`` (the initial safeguard) and ``reference`` (the model before any
safeguard, for the representation term); spec setting, params (``Params``), loop (the outer
loop: LoopConfig), seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Literal

import torch
from pydantic import Field, model_validator

from trainables import compute, data, loop, memory, models, settings
from trainables import defence_spec
from trainables.methods._shared import hidden_states
from trainables.strict import Strict
from trainables.loop import LoopConfig

CITATION = "Tamirisa et al. 2024, Tamper-Resistant Safeguards for Open-Weight LLMs (TAR), arXiv 2408.00761"
# TAR trains on top of a safeguard (``defender.safeguard``; the authors' random mapping unless
# the config names another), the frozen reference beside it for the retain term.
DEFAULT_SAFEGUARD = "random_mapping"
STAGE = "tar"
LABEL = "TAR"
INPUTS = {"model": defence_spec.SUPPRESSED, "reference": defence_spec.REFERENCE}
# Parallel strategies TAR cannot run under, and why (checked when the config loads).
NOT_WITH_STRATEGY = {"fsdp": "its inner-loop snapshot and first-order gradient assume full parameters; use ddp"}
# The outer loop on arithmetic (TAR on Llama-3-8B: lr 2e-5, 750 steps, 32 warmup steps).
DEFAULT_LOOP = {"lr": 3e-4, "steps": 100, "schedule": "warmup_constant", "warmup_steps": 10}


class Params(Strict):
    """TAR's hyperparameters: the inner-loop adversary and the weights of the two losses."""

    inner_steps: int = Field(16, ge=1, description="K, adversary steps per task (TAR: 64)")
    adversary_lrs: list[float] | None = Field(
        None, description="draw the adversary's lr from this set (TAR: [2e-6, 2e-5, 4e-5]); "
        "None: log-uniform in [adversary_lr / spread, adversary_lr · spread]")
    adversary_lr: float = Field(1e-3, gt=0, description="centre of the adversary's lr range")
    adversary_lr_spread: float = Field(3.0, ge=1, description="1: one lr")
    adversary_batch_size: int = Field(32, ge=1, description="TAR: half the outer batch")
    retain_forget: float = Field(0.33, ge=0, le=1, description="share of retain-then-forget adversaries")
    switch_beta: tuple[float, float] = Field((6.0, 3.0), description="Beta(a, b) of the switching point")
    subsample: int = Field(4, ge=1, description="L_TR after every subsample-th adversary step")
    grad_scale: float = Field(4.0, gt=0)
    lam: float = Field(0.0625, ge=0, description="λ of the per-step weight exp(λ·(i − (K−1)))")
    tasks_per_step: int = Field(1, ge=1)
    retain_scale: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.subsample > self.inner_steps:
            raise ValueError(f"subsample ({self.subsample}) must be <= inner_steps ({self.inner_steps}): "
                             "no step would take the tamper-resistance loss")
        if self.adversary_lrs is not None and (not self.adversary_lrs or min(self.adversary_lrs) <= 0):
            raise ValueError("adversary_lrs must be a non-empty list of positive learning rates")
        if min(self.switch_beta) <= 0:
            raise ValueError("switch_beta: both Beta parameters must be > 0")
        return self


class Spec(Strict):
    """TAR's stage (``method: tar``, as the defender is named): the outer ``loop`` with these
    ``params`` on the input safeguard; ``load``: how the input checkpoints are loaded."""

    setting: dict[str, Any]
    method: Literal["tar"] = "tar"
    load: dict[str, Any]
    params: Params
    loop: LoopConfig
    seed: int


@dataclass
class Task:
    """One sampled adversary: its learning rate, its K batches, the held-out forget batch of L_TR."""

    kind: str
    lr: float
    batches: list[torch.Tensor]
    meta: torch.Tensor


def neg_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Negative entropy Σ_v p_v·log p_v of the next-token distributions, averaged over the
    positions where ``mask`` is true (real tokens; every position without a mask)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    neg = (logp.exp() * logp).sum(-1)
    if mask is None:
        return neg.mean()
    mask = mask.to(neg.dtype)
    return (neg * mask).sum() / mask.sum().clamp_min(1.0)


def step_weight(i: int, k: int, lam: float) -> float:
    """exp(λ·(i − (K−1))): the last adversary step weighs 1, earlier ones less."""
    return math.exp(lam * (i - (k - 1)))


def tr_steps(p: Params) -> list[int]:
    """The adversary steps (0-based) after which L_TR is taken."""
    return [i for i in range(p.inner_steps) if (i + 1) % p.subsample == 0]


def sample_task(p: Params, pools: dict[str, torch.Tensor], batch_size: int,
                rng: random.Random, gen: torch.Generator) -> Task:
    """Draw one adversary. ``rng`` draws its lr, kind and switching point (the same on every
    rank, as TAR broadcasts them); ``gen`` draws the batches (rank-offset)."""
    if p.adversary_lrs is not None:
        lr = rng.choice(p.adversary_lrs)
    else:
        lo, hi = p.adversary_lr / p.adversary_lr_spread, p.adversary_lr * p.adversary_lr_spread
        lr = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    kind = "retain_forget" if rng.random() < p.retain_forget else "forget"
    switch = int(rng.betavariate(*p.switch_beta) * p.inner_steps) if kind == "retain_forget" else 0
    batches = [
        data.draw(pools["retain"] if i < switch else pools["adversary"], p.adversary_batch_size, gen)
        for i in range(p.inner_steps)
    ]
    return Task(kind, lr, batches, data.draw(pools["meta"], batch_size, gen))


def tamper_resistance_grads(
    net: torch.nn.Module, trained: list[torch.nn.Parameter], tasks: list[Task], p: Params, setting: ModuleType,
) -> tuple[list[torch.Tensor], float]:
    """Run every task's adversary from the current weights and accumulate the scaled gradient
    of L_TR at the adapted weights. Returns (gradient per trained parameter, Σ of the weighted
    L_TR values); the weights are restored bit-identically afterwards."""
    snapshot = [q.detach().to("cpu", copy=True) for q in trained]  # off the accelerator
    acc = [torch.zeros_like(q) for q in trained]
    total = 0.0
    take = set(tr_steps(p))
    for task in tasks:
        inner = torch.optim.AdamW(trained, lr=task.lr)  # fresh per adversary, as TAR's
        for i, batch in enumerate(task.batches):
            inner.zero_grad(set_to_none=True)
            setting.answer_loss(net(input_ids=batch).logits, batch).backward()
            inner.step()
            if i in take:
                inner.zero_grad(set_to_none=True)
                scale = p.grad_scale * step_weight(i, p.inner_steps, p.lam) / len(tasks)
                tr = neg_entropy(setting.answer_logits(net(input_ids=task.meta).logits))
                (tr * scale).backward()
                for a, q in zip(acc, trained):
                    if q.grad is not None:
                        a.add_(q.grad)
                total += scale * float(tr.detach())
        del inner
        with torch.no_grad():
            for q, s in zip(trained, snapshot):
                q.copy_(s)
    for q in trained:
        q.grad = None
    return acc, total


def linear_term(trained: list[torch.nn.Parameter], grads: list[torch.Tensor]) -> torch.Tensor:
    """Σ ⟨g, p − sg(p)⟩: value 0, gradient ``grads`` (adds a precomputed gradient to a loss)."""
    return sum(((g * (q - q.detach())).sum() for q, g in zip(trained, grads)), torch.zeros((), device=trained[0].device))


def retain_loss(net: torch.nn.Module, reference: torch.nn.Module, batch: torch.Tensor, setting: ModuleType) -> torch.Tensor:
    """NLL on retain plus the mean over layers (embeddings included, as TAR) of the mean L2
    distance between the hidden states of ``net`` and of the frozen ``reference``."""
    out = net(input_ids=batch, output_hidden_states=True)
    with torch.no_grad():
        ref = hidden_states(reference, batch)
    dist = torch.stack([(h.float() - r.float()).norm(dim=-1).mean() for h, r in zip(out.hidden_states, ref)])
    return setting.answer_loss(out.logits, batch) + dist.mean()


def split_forget(forget: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forget problems → (the adversary's half, the held-out half L_TR is taken on)."""
    perm = torch.randperm(len(forget), generator=torch.Generator().manual_seed(seed))
    half = len(forget) // 2
    return forget[perm[half:]], forget[perm[:half]]


def outer_loss_fn(
    p: Params, setting: ModuleType, pools: dict[str, torch.Tensor], reference: torch.nn.Module,
    trained: list[torch.nn.Parameter], batch_size: int, rng: random.Random, gen: torch.Generator,
    log: list | None = None,
) -> Callable[[torch.nn.Module, int], torch.Tensor]:
    """The loss of one outer step, for ``loop.train``: sample the adversaries, accumulate their
    tamper-resistance gradient, and return the retain loss plus the linear term carrying that
    gradient. ``pools``: adversary / meta (held-out forget) / retain token tensors; ``log``
    receives (step, "tr_loss", Σ weighted L_TR)."""

    def loss_fn(net: torch.nn.Module, step: int) -> torch.Tensor:
        tasks = [sample_task(p, pools, batch_size, rng, gen) for _ in range(p.tasks_per_step)]
        grads, tr = tamper_resistance_grads(net, trained, tasks, p, setting)
        if log is not None:
            log.append((step + 1, "tr_loss", tr))
        batch = data.draw(pools["retain"], batch_size, gen)
        return p.retain_scale * retain_loss(net, reference, batch, setting) + linear_term(trained, grads)

    return loss_fn


def step_sequences(spec: Spec) -> tuple[int, int]:
    """(sequences trained, sequences only forwarded) per outer step, as ``run`` charges compute:
    every task's adversary steps and L_TR batches, the retain batch; the frozen reference's
    forward on the retain batch."""
    p, batch = spec.params, spec.loop.batch_size
    return p.tasks_per_step * (p.inner_steps * p.adversary_batch_size + len(tr_steps(p)) * batch) + batch, batch


def memory_work(spec: Spec | dict, model: torch.nn.Module) -> memory.Work:
    """What one TAR outer step holds on its GPU: the model, the frozen reference, the outer
    optimizer's state, the inner adversary's AdamW state and the accumulated tamper-resistance
    gradient (3 more copies of the trained parameters); the CPU snapshot is off the GPU."""
    spec = Spec.model_validate(spec)
    p = spec.params
    return memory.Work(trained=sum(q.numel() for q in model.parameters()), optimizer=spec.loop.optimizer,
                       frozen_copies=1, extra_trained_copies=3,
                       sequences=max(spec.loop.batch_size, p.adversary_batch_size),
                       checkpointing=spec.load.get("gradient_checkpointing", False))


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path) -> dict:
    """TAR-train ``inputs['model']`` (the initial safeguard) and save the tamper-resistant model."""
    spec = Spec.model_validate(spec)
    setting, d = settings.load(spec.setting)
    p = spec.params
    cfg = spec.loop
    dev = loop.device()
    model = models.load(inputs["model"], spec.load).to(dev)
    reference = models.freeze(models.load(inputs["reference"], spec.load).to(dev))
    rank, size = loop.world()
    if size > 1 and loop.strategy() == "fsdp":
        raise ValueError("TAR runs with DDP only (scaling.strategy: ddp)")
    adversary, meta = split_forget(d.forget_all, spec.seed)
    pools = {"adversary": adversary, "meta": meta, "retain": d.retain_train}
    trained = [q for q in model.parameters() if q.requires_grad]
    tr_curve: list[tuple[int, str, float]] = []
    # task draws use one rng on every rank (TAR broadcasts them); batches a rank-offset one
    loss_fn = outer_loss_fn(p, setting, pools, reference, trained, cfg.batch_size,
                            random.Random(spec.seed), data.sampler(spec.seed, rank), tr_curve)
    torch.manual_seed(spec.seed)
    curve, wall = loop.train(model, loss_fn, cfg, eval_fn=lambda m: setting.score(m, d), params=trained)
    models.save_model(model, out_dir)
    trained, forwarded = step_sequences(spec)
    tokens = cfg.steps * trained * d.seq_len
    result = compute.training_result(model, loop.last_eval(curve), curve + tr_curve, tokens, wall)
    ref_tokens = cfg.steps * forwarded * d.seq_len
    result["flops"] += compute.forward_flops(sum(q.numel() for q in reference.parameters()), ref_tokens)
    result["steps"] = cfg.steps
    return result
