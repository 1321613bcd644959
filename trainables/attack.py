"""Stage `attack`: a relearning fine-tune of a released model, scored on held-out forget data.

The attacker trains on the forget facts T (optionally mixed with retain data) and is scored on
the disjoint facts V every ``eval_every`` steps; ``forget_acc_max`` is the best V accuracy along
the trajectory (the attacker may stop at any step), ``forget_acc_final`` the last.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainables import compute, data, loop, models, settings


def run(spec: dict, inputs: dict[str, str], out_dir: Path) -> dict:
    """Fine-tune ``inputs['model']`` on T; no checkpoint is kept, only scores and curves.

    spec: setting, loop (LoopConfig with lr, steps, batch_size, eval_every), retain_fraction
    (share of retain problems in each attack batch, default 0), seed.
    """
    setting, d = settings.load(spec["setting"])
    cfg = loop.LoopConfig(**spec["loop"])
    model = models.load_model(inputs["model"])
    rank, _ = loop.world()
    gen = data.sampler(spec["seed"], rank)
    frac_retain = spec.get("retain_fraction", 0.0)

    def loss_fn(net: torch.nn.Module, step: int) -> torch.Tensor:
        batch = data.mix(d.forget_T, d.retain_train, cfg.batch_size, frac_retain, gen)
        return setting.answer_loss(net(input_ids=batch).logits, batch)

    torch.manual_seed(spec["seed"])
    curve, wall = loop.train(model, loss_fn, cfg, eval_fn=lambda m: setting.score(m, d))
    forget = [v for _, k, v in curve if k == "forget_acc"]
    retain = [v for _, k, v in curve if k == "retain_acc"]
    metrics = {
        "forget_acc_final": forget[-1],
        "forget_acc_max": max(forget),
        "retain_acc_final": retain[-1],
    }
    tokens = cfg.steps * cfg.batch_size * setting.SEQ_LEN
    return compute.training_result(model, metrics, curve, tokens, wall)
