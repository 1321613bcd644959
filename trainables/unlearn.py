"""Stage `unlearn`: apply a shallow unlearning method (from the registry) to a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainables import compute, data, loop, models, settings
from trainables.loop import LoopConfig
from trainables.methods import METHODS
from trainables.strict import Strict


class Spec(Strict):
    """A defender ``method`` (its ``params``, canonical: defaults filled in) applied to the
    input model by ``loop``; ``load``: how the input checkpoint is loaded. TAR's stage takes the
    same spec (``method: tar``)."""

    setting: dict[str, Any]
    method: str
    load: dict[str, Any]
    params: dict[str, Any]
    loop: LoopConfig
    seed: int


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path) -> dict:
    """Unlearn the forget part from ``inputs['model']`` and save the suppressed model.

    The forget batches come from all forget facts (T and V): the defender removes the whole
    capability; the attacker later trains on T only.
    """
    spec = Spec.model_validate(spec)
    setting, d = settings.load(spec.setting)
    method = METHODS[spec.method]
    params = method.Params(**spec.params)
    cfg = spec.loop
    model = models.load(inputs["model"], spec.load).to(loop.device())
    rank, _ = loop.world()
    gen = data.sampler(spec.seed, rank)
    state = method.setup(model, params, spec.seed)

    def loss_fn(net: torch.nn.Module, step: int) -> torch.Tensor:
        forget = data.draw(d.forget_all, cfg.batch_size, gen)
        retain = data.draw(d.retain_train, cfg.batch_size, gen)
        return method.loss(net, forget, retain, params, setting, state)

    torch.manual_seed(spec.seed)
    curve, wall = loop.train(model, loss_fn, cfg, eval_fn=lambda m: setting.score(m, d),
                             params=method.trainable(model, params))
    models.save_model(model, out_dir)
    tokens = cfg.steps * 2 * cfg.batch_size * d.seq_len  # a forget and a retain batch per step
    return compute.training_result(model, loop.last_eval(curve), curve, tokens, wall)
