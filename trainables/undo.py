"""UNDO: corrupt a copy of the suppressed model, then distil the suppressed model into it.

Unlearn → Noise → Distill-on-Outputs (Lee et al. 2025, "Distillation Robustifies Unlearning",
arXiv 2506.06278). The shallow unlearning stage leaves the forget capability latent in the
weights, where a few fine-tuning steps find it again. UNDO mixes the suppressed weights with
noise (strength α) and trains this student to imitate only the teacher's *outputs*: the retain
behaviour is re-learned from the outputs, the latent forget capability is not copied. α = 0
keeps the weights (cheap, not robust), α = 1 is a fresh model (robust, as costly as
pre-training); the search maps the trade-off between.

Stage ``distill``: inputs ``teacher`` (the suppressed model); spec
  setting, model (for ``init: fresh``), init (corrupt | fresh), alpha, beta, temperature,
  epsilon, forget_fraction (the pre-training mix), loop (LoopConfig), seed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import torch

from trainables import compute, data, defence_spec, loop, memory, models, settings
from trainables.loop import LoopConfig
from trainables.strict import Strict

# The robustifier plug-in: the stage that follows every selected method when the config sets
# ``defender.undo`` (search/defender_config.py FOLLOWERS), how logs name it, and its inputs.
STAGE = "distill"
LABEL = "UNDO"
INPUTS = {"teacher": defence_spec.SUPPRESSED}
# Distillation defaults on arithmetic: AdamW, warmup + cosine, clipping (LoopConfig's 1.0).
DISTILL_LOOP = {"steps": 1500, "lr": 2e-3, "schedule": "warmup_cosine", "warmup_steps": 50, "eval_every": 50}
CITATION = "Lee et al. 2025, Distillation Robustifies Unlearning (UNDO), arXiv 2506.06278"
INITS = ("corrupt", "fresh")


def check_unit(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` (α or β) lies in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@torch.no_grad()
def corrupt(model: torch.nn.Module, alpha: float, beta: float, seed: int) -> torch.nn.Module:
    """Shrink and perturb ``model`` in place; returns it.

    Every trainable 2-D weight: ``p ← (1−α)·p + α·β·N`` with ``N`` Xavier-uniform for that
    shape; every other trainable weight (norms, biases): ``p ← (1−α)·p``. The noise comes from
    one CPU generator seeded with ``seed``, drawn parameter by parameter in
    ``model.named_parameters()`` order (tied weights once), so a seed fixes the corruption on
    any device.
    """
    check_unit("alpha", alpha)
    check_unit("beta", beta)
    gen = torch.Generator().manual_seed(seed)
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() == 2 and beta:  # β = 0 (UNDO's WMDP setting): no noise to draw (7B draws take minutes)
            noise = torch.nn.init.xavier_uniform_(torch.empty(p.shape, dtype=torch.float32), generator=gen)
            p.mul_(1.0 - alpha).add_(noise.to(p.device, p.dtype), alpha=alpha * beta)
        else:
            p.mul_(1.0 - alpha)
    return model


def fresh_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A randomly initialised model of ``model``'s architecture (UNDO's option 1: full
    distillation into a new network)."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(copy.deepcopy(model.config))


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Forward KL(teacher ‖ student) of the next-token distributions, averaged over the
    positions where ``mask`` is true (every position without a mask).

    KL = Σ_v p_t(v)·(log p_t(v) − log p_s(v)), with p = softmax(logits / T); multiplied by T²
    so the gradient scale does not shrink with the temperature (Hinton et al. 2015).
    """
    t = temperature
    log_s = torch.log_softmax(student_logits.float() / t, dim=-1)
    log_t = torch.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1) * (t * t)
    if mask is None:
        return kl.mean()
    mask = mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp_min(1.0)


def student(teacher: torch.nn.Module, init: str, alpha: float, beta: float, seed: int) -> torch.nn.Module:
    """The student UNDO trains (every parameter trainable): a corrupted copy of the teacher, or
    a fresh model."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "fresh":
        return fresh_copy(teacher, seed).train()
    net = copy.deepcopy(teacher).train()
    for p in net.parameters():
        p.requires_grad_(True)
    return corrupt(net, alpha, beta, seed)


class Spec(Strict):
    """UNDO's distillation (stage ``distill``): a student made by ``init`` (``corrupt`` with
    ``alpha`` and ``beta``, or ``fresh``: both None) learns the teacher's outputs at
    ``temperature`` on the pre-training mix (``forget_fraction``) by ``loop``, stopping once its
    retain score is within ``epsilon`` of the teacher's."""

    setting: dict[str, Any]
    load: dict[str, Any]
    init: Literal["corrupt", "fresh"]
    alpha: float | None
    beta: float | None
    temperature: float
    epsilon: float
    forget_fraction: float
    loop: LoopConfig
    seed: int


def step_sequences(spec: Spec) -> tuple[int, int]:
    """(sequences trained, sequences only forwarded) per step, as ``run`` charges compute: the
    student's batch, and the frozen teacher's forward on it."""
    return spec.loop.batch_size, spec.loop.batch_size


def memory_work(spec: Spec | dict, model: torch.nn.Module) -> memory.Work:
    """What distillation holds on its GPU: the student trained, the teacher frozen beside it."""
    spec = Spec.model_validate(spec)
    return memory.Work(trained=sum(p.numel() for p in model.parameters()), optimizer=spec.loop.optimizer,
                       frozen_copies=1, sequences=spec.loop.batch_size, loss="distill",
                       checkpointing=spec.load.get("gradient_checkpointing", False))


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path) -> dict:
    """Corrupt (or freshly initialise) a student and distil ``inputs['teacher']`` into it on the
    pre-training mix, until the student's retain score is within ``epsilon`` of the teacher's
    or the step budget runs out. Saves the student; its metrics are the released model's."""
    spec = Spec.model_validate(spec)
    setting, d = settings.load(spec.setting)
    cfg = spec.loop
    dev = loop.device()
    teacher = models.freeze(models.load(inputs["teacher"], spec.load).to(dev))
    net = student(teacher, spec.init, spec.alpha, spec.beta, spec.seed).to(dev)
    target = setting.score(teacher, d)["retain_acc"]
    rank, _ = loop.world()
    gen = data.sampler(spec.seed, rank)
    frac, t = spec.forget_fraction, spec.temperature

    def loss_fn(model: torch.nn.Module, step: int) -> torch.Tensor:
        # The full pre-training mix: only the teacher is unlearned, so forget prompts teach the
        # student the teacher's suppressed answers, not the capability.
        batch = data.mix(d.retain_train, d.forget_all, cfg.batch_size, frac, gen)
        with torch.no_grad():
            teacher_logits = setting.answer_logits(teacher(input_ids=batch).logits)
        return distill_loss(setting.answer_logits(model(input_ids=batch).logits), teacher_logits, temperature=t)

    def close_enough(metrics: dict[str, float], step: int) -> bool:
        return metrics["retain_acc"] >= target - spec.epsilon

    torch.manual_seed(spec.seed)
    curve, wall = loop.train(net, loss_fn, cfg, eval_fn=lambda m: setting.score(m, d), stop_fn=close_enough)
    models.save_model(net, out_dir)
    steps = max(s for s, _, _ in curve)
    trained, forwarded = step_sequences(spec)
    result = compute.training_result(net, loop.last_eval(curve), curve, steps * trained * d.seq_len, wall)
    teacher_n = sum(p.numel() for p in teacher.parameters())
    result["flops"] += compute.forward_flops(teacher_n, steps * forwarded * d.seq_len)
    result["steps"] = steps
    result["teacher_retain_acc"] = target
    return result
