"""What the attack families share: calibration rows, weights restored after a block; for the
training-free ones the stage's run (transform, score once) and its result; for the ones that
optimise a vector or a prompt against a frozen model (``steer``, ``soft_prompt``, ``prefix``) the
attacker's loss on T batches, Adam on the vector, and their result."""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Callable, Iterable, Iterator

import torch

from trainables import attack, loop, models, settings
from trainables.families._context import frozen


def calibration_rows(tokens: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """A seeded draw of ``n`` rows of ``tokens`` (T or retain data, never V)."""
    return tokens[torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))[:n]]


@contextlib.contextmanager
def restored(weights: Iterable[torch.Tensor]) -> Iterator[None]:
    """The block may change ``weights`` in place; they are as they were after it."""
    saved = [(w, w.detach().clone()) for w in weights]
    try:
        yield
    finally:
        with torch.no_grad():
            for w, old in saved:
                w.copy_(old)


def run(family: ModuleType, spec, inputs: dict[str, str], model: torch.nn.Module | None) -> dict:
    """A training-free family's stage: ``inputs['model']`` (or the loaded ``model``) on the
    stage's device, transformed by ``family.applied`` for one scoring; nothing is kept."""
    spec = family.Spec.model_validate(spec)
    model = models.load(inputs["model"], spec.load) if model is None else model
    model.to(loop.device())
    setting, d = settings.load(spec.setting)
    with family.applied(model, spec, d) as scored:  # the model itself, or a wrapper of it (few_shot)
        metrics = setting.score(scored, d)
    used = family.n_examples(model, spec, d) if hasattr(family, "n_examples") else 0
    return result(metrics, family.flops(model, spec, d), model, used)


def result(metrics: dict[str, float], cost: float, model: torch.nn.Module, n_examples: int = 0) -> dict:
    """The result dict of a training-free attack: one evaluation at step 0 (chosen on V_sel and
    reported on V_rep there, like a fine-tune's checkpoint), ``cost`` FLOPs, ``n_examples`` rows
    of T it showed the model (few_shot's)."""
    return {
        "metrics": {"forget_acc_sel_max": metrics["forget_acc_sel"], "best_step": 0,
                    "forget_acc_rep_at_best": metrics["forget_acc_rep"], "forget_acc_max": metrics["forget_acc"],
                    "forget_acc_final": metrics["forget_acc"], "retain_acc_final": metrics["retain_acc"]},
        "curve": [(0, k, v) for k, v in metrics.items()],
        "flops": cost, "n_params": sum(p.numel() for p in model.parameters()),
        "train_wall_s": 0.0, "steps": 0, "n_examples": n_examples,
    }


def t_loss(setting, d, batch_size: int, gen: torch.Generator) -> Callable[[torch.nn.Module, int], torch.Tensor]:
    """The attacker's loss on ``batch_size`` rows of T drawn with ``gen`` each call: the answer
    letter only on ``wmdp`` question rows (as the fine-tune's ``loss_on: answer``), the setting's
    answer loss otherwise."""
    dev = loop.device()
    answer = getattr(d, "forget_T_answer", None)

    def loss_fn(net: torch.nn.Module, step: int) -> torch.Tensor:
        idx = torch.randint(len(d.forget_T), (batch_size,), generator=gen)
        batch = d.forget_T[idx].to(dev)
        logits = net(input_ids=batch).logits
        if answer is not None:
            return attack.target_loss(setting, logits, batch, answer[idx].long().to(dev))
        return setting.answer_loss(logits, batch)

    return loss_fn


def optimised(net: torch.nn.Module, params: list[torch.Tensor], spec, setting, d, per_step: float,
              gen: torch.Generator) -> dict:
    """Adam on ``params`` (a vector or soft tokens; ``net`` uses them) for ``spec.steps`` steps
    of ``spec.lr`` on T batches (``t_loss``), cut to what ``spec.max_flops`` buys at
    ``per_step`` FLOPs a step, evaluated every ``spec.eval_every`` steps and stopped at
    ``spec.stop_at``; the result, scored like a fine-tune's. ``net``'s weights are left as they
    were, their ``requires_grad`` too."""
    steps = spec.steps if spec.max_flops is None else max(0, min(spec.steps, int(spec.max_flops // per_step)))
    cfg = loop.LoopConfig(steps=max(1, steps), lr=spec.lr, batch_size=spec.batch_size, optimizer="adam",
                          grad_clip=None, eval_every=spec.eval_every)
    stop_fn, _ = attack.pruning_rule(None, spec.stop_at)
    torch.manual_seed(spec.seed)
    with frozen(net):  # the loop freezes every weight but ``params``; the caller's flags come back
        curve, wall = loop.train(net, t_loss(setting, d, spec.batch_size, gen), cfg,
                                 eval_fn=lambda m: setting.score(m, d, retain=False), params=params, stop_fn=stop_fn)
    attack.retain_at_end(curve, setting.score(net, d, forget=False))
    return trained(curve, per_step, wall, sum(p.numel() for p in params), len(d.forget_T), steps < spec.steps and spec.steps)


def trained(curve: list, per_step: float, wall: float, n_params: int, n_examples: int, truncated_at) -> dict:
    """The result of a family that trains something for the steps its ``curve`` records:
    the checkpoint chosen on V_sel (``attack.checkpoint``), ``per_step`` FLOPs a step,
    ``truncated_at`` the steps asked where a FLOPs budget cut them (else falsy)."""
    done = max(s for s, _, _ in curve)
    metrics = {**attack.checkpoint(curve), "retain_acc_final": [v for _, k, v in curve if k == "retain_acc"][-1]}
    return {"metrics": metrics, "curve": curve, "flops": per_step * done, "n_params": n_params,
            "train_wall_s": wall, "steps": done, "n_examples": n_examples, "truncated_at": truncated_at or None}
