"""Stage `unlearn`: apply a shallow unlearning method (from the registry) to a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import model_validator

from trainables import compute, data, loop, memory, models, settings
from trainables.loop import LoopConfig
from trainables.methods import METHODS
from trainables.strict import Strict


class Spec(Strict):
    """A shallow unlearning ``method`` of the registry (its ``params``: canonical, defaults
    filled in from its ``Params``) applied to the input model by ``loop``; ``load``: how the
    input checkpoint is loaded."""

    setting: dict[str, Any]
    method: Literal[tuple(METHODS)]  # type: ignore[valid-type]
    load: dict[str, Any]
    params: dict[str, Any]
    loop: LoopConfig
    seed: int

    @model_validator(mode="before")
    @classmethod
    def _canonical(cls, v: Any) -> Any:
        """The method's hyperparameters checked and completed by its ``Params``, so the same
        work has one spec however it was written."""
        if isinstance(v, dict) and v.get("method") in METHODS and isinstance(v.get("params"), dict):
            v = {**v, "params": METHODS[v["method"]].Params(**v["params"]).model_dump()}
        return v


def step_sequences(spec: Spec) -> tuple[int, int]:
    """(sequences trained, sequences only forwarded) per step, as ``run`` charges compute: a
    forget and a retain batch."""
    return 2 * spec.loop.batch_size, 0


def memory_work(spec: Spec | dict, model: torch.nn.Module) -> memory.Work:
    """What unlearning holds on its GPU: the parameters the method trains, a forget and a retain
    batch's activations, and what the method's own ``memory(model, params)`` adds (frozen copies,
    a loss on hidden states)."""
    spec = Spec.model_validate(spec)
    method = METHODS[spec.method]
    params = method.Params(**spec.params)
    trained = method.trainable(model, params)
    n = sum(p.numel() for p in (model.parameters() if trained is None else trained))
    extra = method.memory(model, params) if hasattr(method, "memory") else {}
    return memory.Work(**{"trained": n, "optimizer": spec.loop.optimizer, "sequences": 2 * spec.loop.batch_size,
                          "checkpointing": spec.load.get("gradient_checkpointing", False), **extra})


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
    scheduled = getattr(method, "STEPS_AWARE", False)  # its loss weighs its terms by progress

    def loss_fn(net: torch.nn.Module, step: int) -> torch.Tensor:
        forget = data.draw(d.forget_all, cfg.batch_size, gen)
        retain = data.draw(d.retain_train, cfg.batch_size, gen)
        when = {"step": step, "steps": cfg.steps} if scheduled else {}
        return method.loss(net, forget, retain, params, setting, state, **when)

    torch.manual_seed(spec.seed)
    curve, wall = loop.train(model, loss_fn, cfg, eval_fn=lambda m: setting.score(m, d),
                             params=method.trainable(model, params))
    models.save_model(model, out_dir)
    tokens = cfg.steps * step_sequences(spec)[0] * d.seq_len
    return compute.training_result(model, loop.last_eval(curve), curve, tokens, wall)
