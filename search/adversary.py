"""Adversary search: for one released model, an Optuna study over attacks that maximises the
recovered forget accuracy on V. Its maximum is the model's worst-case ("attacked") score.

Every attack, failed ones too, becomes a row of ``attacks.parquet`` and its scores along the
way rows of ``curves.parquet``.
"""

from __future__ import annotations

import hashlib
import math
import traceback
from dataclasses import dataclass, field

import optuna

from search.config import ExperimentConfig
from search.stages import Runner, StageRef, run_stage
from spaces.dims import suggest


@dataclass
class AttackOutcome:
    """What the adversary search found against one model."""

    best: float = math.nan
    best_attack_id: str | None = None
    flops: float = 0.0
    attacks: list[dict] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)


def seed_of(*parts: object) -> int:
    """A stable 31-bit seed from any strings/numbers (the same inputs give the same attacks)."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16) % (2**31)


def attack_spec(cfg: ExperimentConfig, params: dict, seed: int) -> dict:
    """The attack stage's spec for one point of the attack space."""
    loop = {**cfg.attack.loop.model_dump(), **params}
    return {
        "setting": cfg.setting.model_dump(),
        "loop": loop,
        "retain_fraction": cfg.attack.retain_fraction,
        "seed": seed,
    }


def attack_columns(spec: dict, n_examples: int | None) -> dict:
    """The ``attack.*`` columns describing one attack."""
    loop = spec["loop"]
    return {
        "attack.kind": "full",
        "attack.lr": loop["lr"],
        "attack.steps": loop["steps"],
        "attack.batch": loop["batch_size"],
        "attack.optimizer": loop["optimizer"],
        "attack.schedule": loop["schedule"],
        "attack.lora_r": None,
        "attack.data": "forget" if spec["retain_fraction"] == 0 else "forget+retain",
        "attack.n_examples": n_examples,
    }


def adversary_search(
    runner: Runner,
    cfg: ExperimentConfig,
    released: StageRef,
    trial_id: str,
    experiment: str,
    n_examples: int | None = None,
) -> AttackOutcome:
    """Run ``cfg.attack.budget`` attacks chosen by a seeded TPE study against ``released``."""
    out = AttackOutcome()
    seed = seed_of(cfg.seed, released.key)
    sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(10, max(2, cfg.attack.budget // 2))
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = cfg.attack.search_space()

    def objective(trial: optuna.Trial) -> float:
        attack_id = f"{trial_id}-a{trial.number}"
        spec = attack_spec(cfg, suggest(trial, space), seed_of(seed, trial.number))
        row = {
            "experiment": experiment, "trial_id": trial_id, "attack_id": attack_id,
            **attack_columns(spec, n_examples),
        }
        try:
            ref = run_stage(runner, "attack", spec, {"model": released})
        except Exception as e:
            out.attacks.append({**row, "status": "error", "error": error_text(e)})
            raise
        m = ref.result["metrics"]
        out.attacks.append({
            **row, "status": "ok", "error": None, **m,
            "flops": ref.result["flops"], "wall_s": ref.result["wall_s"],
        })
        out.curves.extend(curve_rows(experiment, trial_id, attack_id, "attack", ref.result["curve"]))
        out.flops += ref.result["flops"]
        if not out.best >= m["forget_acc_max"]:  # also replaces the initial NaN
            out.best, out.best_attack_id = m["forget_acc_max"], attack_id
        return m["forget_acc_max"]

    study.optimize(objective, n_trials=cfg.attack.budget, catch=(Exception,))
    return out


def curve_rows(experiment: str, trial_id: str, attack_id: str | None, stage: str, curve) -> list[dict]:
    """Rows of ``curves.parquet`` from a stage's (step, metric, value) curve."""
    return [
        {"experiment": experiment, "trial_id": trial_id, "attack_id": attack_id,
         "stage": stage, "step": int(s), "metric": k, "value": float(v)}
        for s, k, v in curve
    ]


def error_text(e: BaseException) -> str:
    """One line naming the error, then the innermost frames (enough to debug from a table)."""
    tb = traceback.format_exception(e)
    return f"{type(e).__name__}: {e}\n" + "".join(tb[-3:])
