"""One defender trial, and the baselines, as plain functions over the stage runner.

``defender(ctx, trial_id, params)`` unlearns the reference model with one point of the defender
space, scores the released model and attacks it with the adversary search; ``baseline(ctx,
kind)`` does the same for the pure and reference models. Each writes its rows as one part,
failed or not. The Tune trainable in ``search/driver.py`` only wraps ``defender``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from search import cache, tables
from search.adversary import AttackOutcome, adversary_search, curve_rows, error_text
from search.config import ExperimentConfig
from search.stages import Runner, StageRef, run_stage
from trainables import settings
from trainables.loop import LoopConfig
from trainables.methods import METHODS

BASELINES = ("pure", "reference")


@dataclass(frozen=True)
class Context:
    """Everything a trial needs, picklable for Ray."""

    cfg: ExperimentConfig
    experiment: str
    exp_dir: str
    runner: Runner


def config_hash(cfg: ExperimentConfig, params: dict | None = None) -> str:
    """Hash of what determines a trial: the experiment config (less where it is stored) and
    the trial's own parameters."""
    body = cfg.model_dump(exclude={"storage", "cache_dir", "ray_address", "ray_num_cpus"})
    blob = json.dumps({"cfg": body, "params": params or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain_spec(cfg: ExperimentConfig, kind: str) -> dict:
    """Spec of the reference (retain + forget) or pure (retain only) pre-training."""
    loop = cfg.pretrain.reference if kind == "reference" else cfg.pretrain.pure
    return {
        "setting": cfg.setting.model_dump(),
        "model": cfg.model.model_dump(),
        "loop": loop.model_dump(),
        "forget_fraction": cfg.pretrain.forget_fraction if kind == "reference" else 0.0,
        "seed": cfg.seed,
    }


def pretrain(ctx: Context, kind: str) -> StageRef:
    """The reference or pure model (cached by its spec: trained once, reused by every run)."""
    return run_stage(ctx.runner, "pretrain", pretrain_spec(ctx.cfg, kind))


def split_params(params: dict) -> tuple[dict, dict]:
    """Searched parameters → (loop settings, method hyperparameters)."""
    loop_keys = set(LoopConfig.model_fields)
    return (
        {k: v for k, v in params.items() if k in loop_keys},
        {k: v for k, v in params.items() if k not in loop_keys},
    )


def decode(cfg: ExperimentConfig, config: dict) -> tuple[str, dict]:
    """A point of the defender search → (method, its parameters). With several methods the
    point holds ``method`` and ``<method>.<name>`` keys; with one, plain names."""
    if "method" not in config:
        return cfg.defender.methods[0], dict(config)
    method = config["method"]
    prefix = f"{method}."
    return method, {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}


def unlearn_spec(cfg: ExperimentConfig, method: str, params: dict) -> dict:
    """Spec of the unlearning stage: the method's default loop, overridden by the loop keys the
    config sets, overridden by the searched values; fixed then searched hyperparameters."""
    loop, hyper = split_params(params)
    return {
        "setting": cfg.setting.model_dump(),
        "method": method,
        "params": {**cfg.defender.method_params(method), **hyper},
        "loop": {
            **LoopConfig().model_dump(), **METHODS[method].DEFAULT_LOOP,
            **cfg.defender.loop.model_dump(exclude_unset=True), **loop,
        },
        "seed": cfg.seed,
    }


def _attack_released(
    ctx: Context, trial_id: str, released: StageRef
) -> AttackOutcome:
    n_examples = len(settings.get(ctx.cfg.setting.name).build(ctx.cfg.setting).forget_T)
    return adversary_search(ctx.runner, ctx.cfg, released, trial_id, ctx.experiment, n_examples)


def _row(ctx: Context, trial_id: str, kind: str, method: str, params: dict) -> dict:
    return {
        "experiment": ctx.experiment, "trial_id": trial_id, "kind": kind,
        "setting": ctx.cfg.setting.name, "method": method, "seed": ctx.cfg.seed,
        **{f"param.{k}": v for k, v in params.items()},
        "config_hash": config_hash(ctx.cfg, params), "code_version": cache.code_version(),
    }


def _finish(
    ctx: Context, row: dict, released: StageRef, outcome: AttackOutcome,
    flops_pretrain: float, flops_unlearn: float, defence_flops: float, ref_flops: float,
    curves: list[dict],
) -> dict:
    """Complete ``row`` from the released model and its attacks; write the trial's part.

    ``defence_flops`` is what making this model cost beyond the reference's pre-training
    (unlearning for a defender, its own pre-training for the pure model, 0 for the reference).
    """
    m = released.result["metrics"]
    ok = outcome.best == outcome.best  # not NaN: at least one attack finished
    row.update({
        "status": "ok" if ok else "error",
        "error": None if ok else "every attack failed; see attacks.parquet",
        "retain_acc": m["retain_acc"], "forget_acc": m["forget_acc"],
        "forget_acc_attacked": outcome.best, "best_attack_id": outcome.best_attack_id,
        "attacks_run": len(outcome.attacks),
        "flops_pretrain": flops_pretrain, "flops_unlearn": flops_unlearn,
        "flops_attack": outcome.flops,
        "compute_frac": defence_flops / ref_flops,
        "feasible": ok and (ctx.cfg.search.retain_floor is None or m["retain_acc"] >= ctx.cfg.search.retain_floor),
        "model_key": released.key, "finished_at": time.time(),
    })
    tables.write_part(ctx.exp_dir, row["trial_id"], {
        "trials": [row], "attacks": outcome.attacks, "curves": curves + outcome.curves,
    })
    return row


def _fail(ctx: Context, row: dict, e: BaseException, start: float) -> None:
    """Write the failed trial's row (attack failures are caught inside the adversary search, so
    a trial that raises has no attack rows to keep)."""
    row.update({
        "status": "error", "error": error_text(e), "wall_s": time.perf_counter() - start,
        "finished_at": time.time(),
    })
    tables.write_part(ctx.exp_dir, row["trial_id"], {"trials": [row]})


def defender(ctx: Context, trial_id: str, config: dict, reference: StageRef) -> dict:
    """Unlearn ``reference`` with one point of the defender search, then attack the released
    model. Returns the trial's row."""
    start = time.perf_counter()
    method, params = decode(ctx.cfg, config)
    row = _row(ctx, trial_id, "defender", method, params)
    try:
        released = run_stage(ctx.runner, "unlearn", unlearn_spec(ctx.cfg, method, params), {"model": reference})
        curves = curve_rows(ctx.experiment, trial_id, None, "unlearn", released.result["curve"])
        outcome = _attack_released(ctx, trial_id, released)
        row["wall_s"] = time.perf_counter() - start
        ref_flops, flops = reference.result["flops"], released.result["flops"]
        return _finish(ctx, row, released, outcome, ref_flops, flops, flops, ref_flops, curves)
    except Exception as e:
        _fail(ctx, row, e, start)
        raise


def baseline(ctx: Context, kind: str, reference: StageRef, model: StageRef | None = None) -> dict:
    """Score and attack the pure or the reference model, as a baseline row."""
    start = time.perf_counter()
    row = _row(ctx, kind, "baseline", kind, {})
    try:
        model = model or pretrain(ctx, kind)
        curves = curve_rows(ctx.experiment, kind, None, "pretrain", model.result["curve"])
        outcome = _attack_released(ctx, kind, model)
        row["wall_s"] = time.perf_counter() - start
        own = model.result["flops"]
        defence = own if kind == "pure" else 0.0
        return _finish(ctx, row, model, outcome, own, 0.0, defence, reference.result["flops"], curves)
    except Exception as e:
        _fail(ctx, row, e, start)
        raise
