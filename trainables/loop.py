"""The one training loop every stage uses (pre-training, unlearning, attacks).

A stage supplies a ``loss_fn(model, step) -> loss`` that draws its own batches and an optional
``eval_fn(model) -> metrics``; the loop owns the optimizer, the schedule, clipping, evaluation
every ``eval_every`` steps and the curve it records. It runs the same in one plain process and
inside a Ray Train worker: when ``torch.distributed`` is initialised with more than one rank the
model is wrapped in DDP (each rank draws its own batches from a rank-offset generator).
"""

from __future__ import annotations

import math
import os
import time
from functools import partial
from typing import Any, Callable, Literal

import torch
from pydantic import Field, ValidationError

from trainables.strict import Strict, format_error

Curve = list[tuple[int, str, float]]  # (step, metric, value)

def _schedule_free_adamw(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Schedule-Free AdamW (Defazio et al. 2024), TAR's outer optimiser and one of its red
    team's. Its warm-up is the loop's (``warmup_*`` schedules); it takes no decay."""
    import schedulefree

    return schedulefree.AdamWScheduleFree(params, lr=lr, weight_decay=weight_decay, warmup_steps=0)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adamw_schedule_free": _schedule_free_adamw,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "sgd_momentum": partial(torch.optim.SGD, momentum=0.9),
    "sgd_nesterov": partial(torch.optim.SGD, momentum=0.9, nesterov=True),
    "adagrad": torch.optim.Adagrad,
}
SCHEDULES = ("constant", "warmup_constant", "cosine", "warmup_cosine")


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite: the run is failed, not silently continued."""


class LoopConfig(Strict):
    """Optimisation settings of one training run."""

    steps: int = Field(100, ge=1, le=10_000_000)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    optimizer: Literal[tuple(OPTIMIZERS)] = "adamw"  # type: ignore[valid-type]
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal[SCHEDULES] = "constant"  # type: ignore[valid-type]
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    eval_every: int = Field(0, ge=0)  # 0: evaluate only at the end
    # evaluate at these steps (and at 0 and the end) instead of every eval_every (UNDO's
    # WMDP relearning evaluates at 10, 25, 50, 150, 500)
    eval_at: list[int] = []

    def evaluates(self) -> bool:
        """Whether training evaluates before the end (at step 0 and along the way)."""
        return bool(self.eval_every or self.eval_at)

    def evaluates_at(self, step: int) -> bool:
        """Whether ``step`` (1-based count of steps done, < steps) is an evaluation step."""
        if self.eval_at:
            return step in self.eval_at
        return bool(self.eval_every) and step % self.eval_every == 0


def _optimizer_mode(opt: torch.optim.Optimizer, train: bool) -> None:
    """Schedule-Free optimisers train at one point of their two sequences and evaluate (and
    are saved) at the other: switch before steps, evaluations and the end. Others: no-op."""
    switch = getattr(opt, "train" if train else "eval", None)
    if callable(switch):
        switch()


def lr_factor(schedule: str, step: int, steps: int, warmup: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based): linear warmup over ``warmup``
    steps for the ``warmup_*`` schedules, then constant or a cosine decay to 0 at ``steps``."""
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 and schedule.startswith("warmup") else 1.0
    if schedule.endswith("cosine"):
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))
    return warm


def world() -> tuple[int, int]:
    """(rank, world size) of the current torch.distributed group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def device() -> torch.device:
    """This process's accelerator: ``cuda:LOCAL_RANK`` where CUDA is visible (Ray Train sets
    LOCAL_RANK for its GPU workers), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


STRATEGIES = ("ddp", "fsdp")
_strategy = {"name": "ddp"}


def set_strategy(name: str) -> None:
    """How ``train`` parallelises over more than one rank: ``ddp`` (a full replica per rank,
    gradients all-reduced) or ``fsdp`` (parameters, gradients and optimizer state sharded over
    the ranks: PyTorch's ``fully_shard``, per decoder layer and at the root). Set by the Ray Train
    worker from ``scaling.strategy``."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    _strategy["name"] = name


def strategy() -> str:
    return _strategy["name"]


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a causal LM (``model.layers``, ``transformer.h``, ... also inside a
    peft wrapper): the longest ``ModuleList`` whose name ends in ``layers`` or ``h``."""
    found = [m for name, m in model.named_modules()
             if isinstance(m, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "h")]
    return list(max(found, key=len)) if found else []


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: shard each decoder layer, then the rest, over every rank (in place)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dev = next(model.parameters()).device
    mesh = init_device_mesh(dev.type, (world()[1],))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def wrap_for_world(model: torch.nn.Module, trained: list[torch.nn.Parameter] | None = None):
    """Prepare ``model`` for the current world: unchanged on one rank; DDP-wrapped, or sharded
    in place with FSDP (``set_strategy``), on more (FSDP also on a one-rank process group). Returns (the module to call, the trained
    parameters as they are now: FSDP replaces parameters by sharded ones, found again by name)."""
    trained = trained if trained is not None else [p for p in model.parameters() if p.requires_grad]
    # Only the trained parameters want gradients: DDP waits for a gradient of every parameter
    # that wants one, and on one rank a gradient nobody steps on costs backward compute and
    # memory that the optimizer's zero_grad never frees (RMU trains 3 of 7B parameters).
    keep = {id(p) for p in trained}
    for p in model.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)
    _, size = world()
    grouped = torch.distributed.is_available() and torch.distributed.is_initialized()
    # FSDP still shards on a one-rank group (a no-op split) so that one GPU exercises its path
    if not grouped or (size == 1 and strategy() == "ddp"):
        return model, trained
    if strategy() == "fsdp":
        names = {id(p): n for n, p in model.named_parameters()}
        wanted = [names[id(p)] for p in trained]
        shard(model)
        now = dict(model.named_parameters())
        return model, [now[n] for n in wanted]
    dev = next(model.parameters()).device
    ids = [dev.index] if dev.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids), trained


def sharded(model: torch.nn.Module) -> bool:
    """True when ``model``'s parameters are FSDP shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def train(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, int], torch.Tensor],
    cfg: LoopConfig,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    params: list[torch.nn.Parameter] | None = None,
    stop_fn: Callable[[dict[str, float], int], bool] | None = None,
) -> tuple[Curve, float]:
    """Train ``model`` for at most ``cfg.steps`` steps. Returns (curve, wall seconds).

    ``params`` restricts what is optimised (default: every parameter that requires grad).
    The curve holds ``loss`` every step interval and ``eval_fn``'s metrics at step 0, every
    ``eval_every`` steps (or at ``eval_at``), and at the end. ``stop_fn(metrics, step)`` is asked after every evaluation
    and ends training early when it returns True (every rank evaluates the same replicated
    model on the same data, so every rank stops at the same step); the last curve step is the
    number of steps taken.
    """
    start = time.perf_counter()
    model.to(device())
    net, trained = wrap_for_world(model, params)  # before the optimizer: FSDP swaps parameters
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    opt = OPTIMIZERS[cfg.optimizer](trained, **kwargs)
    # a schedule-free optimiser replaces the decay: only the warm-up of the schedule applies
    schedule = cfg.schedule.replace("cosine", "constant") if cfg.optimizer.endswith("schedule_free") else cfg.schedule
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(schedule, s, cfg.steps, cfg.warmup_steps)
    )
    curve: Curve = []

    def evaluate(step: int) -> bool:
        """Record the metrics at ``step``; True if ``stop_fn`` says training is done."""
        if eval_fn is None:
            return False
        _optimizer_mode(opt, train=False)
        metrics = eval_fn(model)
        _optimizer_mode(opt, train=True)
        curve.extend((step, k, float(v)) for k, v in metrics.items())
        return stop_fn is not None and stop_fn(metrics, step)

    _optimizer_mode(opt, train=True)
    stopped = cfg.evaluates() and evaluate(0)
    net.train()
    log_every = max(1, cfg.eval_every or cfg.steps // 10)
    done = 0
    # Non-finite losses are flagged on the device and checked at logging steps, not every step:
    # a per-step check would synchronise the GPU and stall the kernel queue.
    bad = torch.zeros((), dtype=torch.bool, device=device())
    first_bad = torch.zeros((), device=device())  # the loss at the first non-finite step
    for step in range(0 if stopped else cfg.steps):
        # Gradients go before the forward pass, not after it: the last step's would otherwise
        # stay alive beside this step's activations (a 7B full fine-tune: 14.5 GB more at peak).
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net, step)
        first_bad = torch.where(bad, first_bad, loss.detach().float())
        bad = bad | ~torch.isfinite(loss.detach())
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
        opt.step()
        sched.step()
        done = step + 1
        if done % log_every == 0 or done == cfg.steps or done in cfg.eval_at:
            if bool(bad):
                raise NonFiniteLoss(f"loss is {first_bad.item()} at or before step {step}")
            curve.append((done, "loss", float(loss.detach())))
        if cfg.evaluates_at(done) and done != cfg.steps:
            if evaluate(done):  # the loss at ``done`` is logged: an evaluation step is a logging step
                stopped = True
                break
    if not stopped:
        evaluate(done)
    _optimizer_mode(opt, train=False)  # the model leaves holding what was evaluated (and is saved)
    model.eval()
    return curve, time.perf_counter() - start


def last_eval(curve: Curve) -> dict[str, float]:
    """The evaluation metrics at the last step of a curve (the final ``eval_fn`` call)."""
    end = max(step for step, _, _ in curve)
    return {k: v for step, k, v in curve if step == end and k != "loss"}


def check_params(params_cls: type[Strict], fixed: dict[str, Any], loop: dict[str, Any], where: str) -> None:
    """Validate fixed values of a method: its hyperparameters by ``params_cls``, its loop keys
    (``lr``, ``steps``, ...) by ``LoopConfig`` over ``loop``; a mistake names ``where.<field>``."""
    try:
        params_cls(**{k: v for k, v in fixed.items() if k not in LoopConfig.model_fields})
    except ValidationError as e:
        raise ValueError(f"{where}.{format_error(e)}") from None
    check_loop_keys(fixed, loop, where)


def check_loop_keys(fixed: dict[str, Any], loop: dict[str, Any], where: str) -> None:
    """Validate the loop keys among fixed values (``lr``, ``steps``, ...) by ``LoopConfig`` over
    ``loop``; other keys are not looked at. A mistake names ``where.<field>``."""
    try:
        LoopConfig(**{**loop, **{k: v for k, v in fixed.items() if k in LoopConfig.model_fields}})
    except ValidationError as e:
        raise ValueError(f"{where}.{format_error(e)}") from None
