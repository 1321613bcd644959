"""Stage `pretrain`: train the reference model (retain + forget) or the pure model (retain only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from trainables import compute, data, loop, memory, models, settings
from trainables.loop import LoopConfig
from trainables.strict import Strict


class Spec(Strict):
    """A pre-training run: a fresh ``model`` trained by ``loop`` on the setting's mix with
    ``forget_fraction`` forget facts (0 for the pure model)."""

    setting: dict[str, Any]
    model: models.ModelConfig
    loop: LoopConfig
    forget_fraction: float
    seed: int


def memory_work(spec: Spec | dict, model: torch.nn.Module) -> memory.Work:
    """What pre-training holds on its GPU (``trainables/memory.py``); ``model`` on the meta device."""
    spec = Spec.model_validate(spec)
    return memory.Work(trained=sum(p.numel() for p in model.parameters()), optimizer=spec.loop.optimizer,
                       sequences=spec.loop.batch_size, checkpointing=spec.model.gradient_checkpointing)


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path) -> dict:
    """Train a fresh model on the setting's pre-training mix and save it to ``out_dir``."""
    spec = Spec.model_validate(spec)
    setting, d = settings.load(spec.setting)
    cfg = spec.loop
    model = models.build_model(spec.model, setting.vocab_size(d), d.seq_len)
    rank, _ = loop.world()
    gen = data.sampler(spec.seed, rank)
    frac = spec.forget_fraction
    forget = d.forget_all

    def loss_fn(net: torch.nn.Module, step: int) -> torch.Tensor:
        batch = data.mix(d.retain_train, forget, cfg.batch_size, frac, gen)
        return setting.answer_loss(net(input_ids=batch).logits, batch)

    torch.manual_seed(spec.seed)
    curve, wall = loop.train(model, loss_fn, cfg, eval_fn=lambda m: setting.score(m, d))
    models.save_model(model, out_dir)
    tokens = cfg.steps * cfg.batch_size * d.seq_len
    return compute.training_result(model, loop.last_eval(curve), curve, tokens, wall)


class PretrainConfig(Strict):
    """Pre-training of the reference model (retain + forget) and the pure model (retain only).

    With ``model.pretrained`` nothing is pre-trained: the loaded model is the reference and
    ``model.pure_pretrained`` (if given) the pure baseline. ``pure: null`` skips the pure
    baseline (robustness is then not normalised). ``forget_fraction`` is also the forget share
    of UNDO's distillation mix."""

    reference: LoopConfig | None = None
    pure: LoopConfig | None = None
    forget_fraction: float = Field(0.5, gt=0, lt=1)
