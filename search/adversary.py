"""Adversary search: for one released model, an Optuna study over attacks that maximises the
recovered forget accuracy on V. Its maximum is the model's worst-case ("attacked") score.

Every attack, failed ones too, becomes a row of ``attacks.parquet`` and its scores along the
way rows of ``curves.parquet``.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import threading
import traceback
from dataclasses import dataclass, field

import optuna

from search.config import ExperimentConfig
from search.stages import Runner, StageRef, run_stage
from spaces import BATTERIES
from spaces.attack import LORA_DEFAULTS
from spaces.dims import suggest


@dataclass
class AttackOutcome:
    """What the adversary search found against one model."""

    best: float = math.nan
    best_attack_id: str | None = None
    flops: float = 0.0
    attacks: list[dict] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    study: optuna.Study | None = None  # the adversary search's study (None: batteries only)


def seed_of(*parts: object) -> int:
    """A stable 31-bit seed from any strings/numbers (the same inputs give the same attacks)."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16) % (2**31)


LOOP_KEYS = ("optimizer", "schedule", "lr", "steps", "batch_size", "warmup_steps", "eval_every")


def attack_spec(cfg: ExperimentConfig, params: dict, seed: int) -> dict:
    """The attack stage's spec for one point of the attack space (fixed ``attack.params``, then
    the point's own values; LoRA's defaults where a LoRA attack leaves one out)."""
    p = {**cfg.attack.params, **params}
    loop = {**cfg.attack.loop.model_dump(), **{k: p[k] for k in LOOP_KEYS if k in p}}
    if loop["schedule"].startswith("warmup") and not loop["warmup_steps"]:
        loop["warmup_steps"] = max(1, loop["steps"] // 10)
    lora = None
    if p.get("kind", "full") == "lora":
        q = {**LORA_DEFAULTS, **{k: v for k, v in p.items() if k in LORA_DEFAULTS}}
        lora = {"r": q["lora_r"], "alpha": q["lora_alpha"], "dropout": q["lora_dropout"], "targets": q["lora_targets"]}
    return {
        "setting": cfg.setting.model_dump(),
        "load": cfg.model.load_options(),
        "loop": loop,
        "data": p.get("data", "forget"),
        "retain_fraction": cfg.attack.retain_fraction,
        "n_examples": p.get("n_examples"),
        "lora": lora,
        "seed": seed,
    }


def attack_columns(spec: dict, n_examples: int | None, source: str) -> dict:
    """The ``attack.*`` columns describing one attack."""
    loop, lora = spec["loop"], spec["lora"] or {}
    return {
        "attack.source": source,
        "attack.kind": "lora" if spec["lora"] else "full",
        "attack.lr": loop["lr"],
        "attack.steps": loop["steps"],
        "attack.batch": loop["batch_size"],
        "attack.optimizer": loop["optimizer"],
        "attack.schedule": loop["schedule"],
        "attack.lora_r": lora.get("r"),
        "attack.lora_alpha": lora.get("alpha"),
        "attack.lora_dropout": lora.get("dropout"),
        "attack.lora_targets": lora.get("targets"),
        "attack.data": spec["data"],
        "attack.n_examples": spec["n_examples"] or n_examples,
    }


def adversary_search(
    runner: Runner,
    cfg: ExperimentConfig,
    released: StageRef,
    trial_id: str,
    experiment: str,
    n_examples: int | None = None,
    seed: int | None = None,
) -> AttackOutcome:
    """Run the configured batteries, then ``cfg.attack.budget`` attacks chosen by a seeded TPE
    study, against ``released``; the outcome's best is the maximum over all of them. ``seed``
    defaults to one derived from the experiment's seed and the model (the same attacks every
    time a model is attacked)."""
    out = AttackOutcome()
    seed = seed_of(cfg.seed, released.key) if seed is None else seed

    lock = threading.Lock()  # concurrent attacks append rows and update the best

    def run_attack(attack_id: str, params: dict, attack_seed: int, source: str, prune: dict | None = None) -> dict:
        spec = {**attack_spec(cfg, params, attack_seed), "prune": prune}
        row = {
            "experiment": experiment, "trial_id": trial_id, "attack_id": attack_id,
            **attack_columns(spec, n_examples, source),
        }
        try:
            ref = run_stage(runner, "attack", spec, {"model": released})
        except Exception as e:
            with lock:
                out.attacks.append({**row, "status": "error", "error": error_text(e)})
            raise
        m, pruned = ref.result["metrics"], ref.result.get("pruned_at") is not None
        with lock:
            out.attacks.append({
                **row, "status": "pruned" if pruned else "ok", "error": None, **m,
                "attack.n_examples": ref.result["n_examples"], "attack.steps_run": ref.result["steps"],
                "flops": ref.result["flops"], "wall_s": ref.result["wall_s"],
            })
            out.curves.extend(curve_rows(experiment, trial_id, attack_id, "attack", ref.result["curve"]))
            out.flops += ref.result["flops"]
            if not out.best >= m["forget_acc_max"]:  # also replaces the initial NaN; a pruned
                out.best, out.best_attack_id = m["forget_acc_max"], attack_id  # attack's max counts
        return ref.result

    for name in cfg.attack.batteries:
        for i, params in enumerate(BATTERIES[name](cfg.attack.battery_steps)):
            try:
                run_attack(f"{trial_id}-{name}{i}", params, seed_of(seed, name, i), name)
            except Exception:
                pass  # recorded as a failed attack row; the battery goes on
    if cfg.attack.budget:
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(10, max(2, cfg.attack.budget // 2))
        )
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=cfg.attack.prune_startup, n_warmup_steps=cfg.attack.prune_warmup)
                  if cfg.attack.pruner == "median" else optuna.pruners.NopPruner())
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
        space, lora_space = cfg.attack.search_space(), cfg.attack.lora_space()

        def objective(trial: optuna.Trial) -> float:
            params = suggest(trial, space)
            if {**cfg.attack.params, **params}.get("kind", "full") == "lora":
                params.update(suggest(trial, lora_space))  # a conditional space
            result = run_attack(f"{trial_id}-a{trial.number}", params, seed_of(seed, trial.number),
                                "search", prune_rule(cfg, study))
            for step, key, value in result["curve"]:  # the trajectory, for the pruner and the record
                if key == "forget_acc":
                    trial.report(value, step)
            if result.get("pruned_at") is not None:
                raise optuna.TrialPruned(f"pruned at step {result['pruned_at']}")
            return result["metrics"]["forget_acc_max"]

        study.optimize(objective, n_trials=cfg.attack.budget, catch=(Exception,), n_jobs=cfg.attack.concurrency)
        out.study = study
    return out


def prune_rule(cfg: ExperimentConfig, study: optuna.Study) -> dict | None:
    """The median rule for the next attack, as data the stage applies at its evaluations: at
    every step ≥ ``prune_warmup``, the median of the completed attacks' V accuracy at that step
    (Optuna's ``MedianPruner``: prune when the best value so far is below it). None until
    ``prune_startup`` attacks have completed, or with ``pruner: none``."""
    if cfg.attack.pruner == "none":
        return None
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < cfg.attack.prune_startup:
        return None
    steps = sorted({s for t in done for s in t.intermediate_values if s >= cfg.attack.prune_warmup})
    below = {s: statistics.median([t.intermediate_values[s] for t in done if s in t.intermediate_values])
             for s in steps}
    return {"warmup": cfg.attack.prune_warmup, "below": {str(s): v for s, v in below.items()}}


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
