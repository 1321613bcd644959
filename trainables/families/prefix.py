"""Attack family `prefix`: a universal adversarial prefix — ``tokens`` discrete tokens before
every question, found by greedy coordinate gradient (GCG, Zou et al. 2023) on T; no weight
changes.

Łucki et al. 2024 ("An adversarial perspective on machine unlearning for AI safety") recover
RMU-unlearned WMDP knowledge with universal prefixes found this way; TamperBench ships GCG beside
its fine-tuning attacks.

One step, on a batch of T rows: the gradient of the answer loss with respect to the one-hot
prefix gives, at every prefix position, the ``topk`` tokens whose swap most lowers the loss to
first order; ``candidates`` prefixes, each the current one with one position (drawn) swapped
for one of that position's top-k tokens (drawn), are scored on the same batch, and the best
replaces the current prefix if it lowers that batch's loss (Zou et al. take the best candidate
even when it is worse; keeping the better one makes the loss on a fixed batch non-increasing,
which a test checks). The first prefix is drawn (seeded) from T's tokens; candidates come from
the whole vocabulary but padding. Scored like a fine-tune: evaluations every ``eval_every``
steps with the prefix in front, the checkpoint chosen on V_sel and reported on V_rep.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from pydantic import Field

from trainables import attack, loop, models, settings
from trainables.families import _base
from trainables.families._context import Prepended, check_room, frozen, token_pool
from trainables.strict import Strict

CITATION = "Zou et al. 2023 (GCG); Łucki et al. 2024 (universal prefixes recover unlearned knowledge)"
STAGE = "prefix"
SEEDED = True
TRAINING_FREE = False
CONTEXT = True  # needs positions before the question (search/attack_families.py context_room)


class Spec(Strict):
    """One GCG attack: a prefix of ``tokens`` tokens, ``steps`` steps of ``batch_size`` T rows,
    ``topk`` swaps per position, ``candidates`` prefixes tried per step, evaluated every
    ``eval_every`` steps. ``stop_at`` / ``max_flops``: as the fine-tune's."""

    setting: dict
    load: dict = {}
    tokens: int = Field(20, ge=1, le=1024)
    steps: int = Field(50, ge=1, le=10_000_000)
    topk: int = Field(64, ge=1)
    candidates: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    eval_every: int = Field(10, ge=1)
    stop_at: int | None = None
    max_flops: float | None = None
    seed: int = 0


def flops_per_step(model: torch.nn.Module, spec: Spec, width: int) -> float:
    """The gradient pass (forward and backward to the one-hot prefix: 4·N per token) and one
    forward pass per candidate (2·N per token), over the batch's prefixed rows."""
    tokens = spec.batch_size * (spec.tokens + width)
    return sum(p.numel() for p in model.parameters()) * tokens * (4.0 + 2.0 * spec.candidates)


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path, model: torch.nn.Module | None = None) -> dict:
    """Search the prefix against ``inputs['model']``; nothing is kept but scores."""
    spec = Spec.model_validate(spec)
    model = models.load(inputs["model"], spec.load) if model is None else model
    setting, d = settings.load(spec.setting)
    return gcg(model, spec, setting, d)


def batch_loss(setting, d, logits: torch.Tensor, batch: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The attacker's loss on T rows ``idx`` (the answer letter only on question rows), one
    value per row."""
    answer = getattr(d, "forget_T_answer", None)
    if answer is None:
        return setting.answer_loss(logits, batch, "none").flatten(1).mean(1)
    per = setting.answer_loss(logits, batch, "none")
    w = answer[idx].long().to(batch.device)[:, 1:].to(per.dtype)
    return (per * w).sum(1) / w.sum(1).clamp(min=1)


def step(model: torch.nn.Module, setting, d, prefix: torch.Tensor, idx: torch.Tensor, spec: Spec,
         allowed: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, float, float]:
    """One GCG step on T rows ``idx``: (the prefix after it, the batch's loss before, after)."""
    dev = prefix.device
    batch = d.forget_T[idx].to(dev)
    emb = model.get_input_embeddings().weight
    onehot = torch.nn.functional.one_hot(prefix, emb.shape[0]).to(emb.dtype).requires_grad_()
    loss = batch_loss(setting, d, Prepended(model, onehot @ emb)(input_ids=batch).logits, batch, idx).mean()
    (grad,) = torch.autograd.grad(loss, onehot)
    grad = grad.float().masked_fill(~allowed.to(dev), float("inf"))
    top = (-grad).topk(min(spec.topk, int(allowed.sum())), dim=1).indices  # (k, topk)
    pos = torch.randint(len(prefix), (spec.candidates,), generator=gen).to(dev)
    pick = torch.randint(top.shape[1], (spec.candidates,), generator=gen).to(dev)
    cands = prefix.repeat(spec.candidates, 1)
    cands[torch.arange(spec.candidates, device=dev), pos] = top[pos, pick]
    losses = candidate_losses(model, setting, d, cands, batch, idx)
    best = int(losses.argmin())
    if losses[best] < loss.detach():
        return cands[best], loss.item(), losses[best].item()
    return prefix, loss.item(), loss.item()


@torch.no_grad()
def candidate_losses(model: torch.nn.Module, setting, d, cands: torch.Tensor, batch: torch.Tensor,
                     idx: torch.Tensor, max_rows: int = 512) -> torch.Tensor:
    """The batch's mean loss under each candidate prefix (C,), candidates × rows in forward
    passes of at most ``max_rows`` rows."""
    c, k = cands.shape
    b = len(batch)
    check_room(model, k, batch.shape[1])
    out = []
    for chunk in cands.split(max(1, max_rows // b)):
        ids = torch.cat([chunk.repeat_interleave(b, 0), batch.repeat(len(chunk), 1)], 1)
        logits = model(input_ids=ids).logits[:, k:]
        out.append(batch_loss(setting, d, logits, batch.repeat(len(chunk), 1), idx.repeat(len(chunk))).view(len(chunk), b).mean(1))
    return torch.cat(out)


def gcg(model: torch.nn.Module, spec: Spec, setting, d) -> dict:
    """The attack on a loaded ``model`` with the setting's functions and data; the model is left
    as it was."""
    start = time.perf_counter()
    model.to(loop.device())
    dev = loop.device()
    gen = torch.Generator().manual_seed(spec.seed)
    pad = getattr(d, "pad_id", None)
    pool = token_pool(d.forget_T, pad)
    prefix = pool[torch.randint(len(pool), (spec.tokens,), generator=gen)].to(dev)
    vocab = model.get_input_embeddings().weight.shape[0]
    allowed = torch.arange(vocab) < setting.vocab_size(d)  # not the embedding table's padding rows
    if pad is not None:
        allowed[pad] = False
    per_step = flops_per_step(model, spec, d.forget_T.shape[1])
    steps = spec.steps if spec.max_flops is None else max(0, min(spec.steps, int(spec.max_flops // per_step)))
    stop_fn, _ = attack.pruning_rule(None, spec.stop_at)
    curve: list = []
    was_training = model.training
    model.eval()

    def evaluate(at: int) -> bool:
        metrics = setting.score(Prepended(model, prefix), d, retain=False)
        curve.extend((at, k, float(v)) for k, v in metrics.items())
        return stop_fn is not None and stop_fn(metrics, at)

    done = 0
    with frozen(model):
        stopped = evaluate(0)
        for i in range(0 if stopped else steps):
            idx = torch.randint(len(d.forget_T), (spec.batch_size,), generator=gen)
            prefix, before, _ = step(model, setting, d, prefix, idx, spec, allowed, gen)
            curve.append((i, "loss", before))
            done = i + 1
            if (done % spec.eval_every == 0 or done == steps) and evaluate(done):
                break
        attack.retain_at_end(curve, setting.score(Prepended(model, prefix), d, forget=False))
    model.train(was_training)
    return _base.trained(curve, per_step, time.perf_counter() - start, spec.tokens, len(d.forget_T),
                         steps < spec.steps and spec.steps)
