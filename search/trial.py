"""One defender trial, and the baselines, as plain functions over the stage runner.

``defender(ctx, trial_id, point)`` resolves one point of the defender space into its pipeline
(``search/defender_config.py`` ``resolve``: the unlearning that makes the suppressed model, then
any robustifier on top), runs the steps in order, scores the released model and attacks it with
the adversary search; ``baseline(ctx, kind)`` does the same for the pure, reference and
suppressed models. Each writes its rows as one part, failed or not. ``defender_trial``, the Tune function trainable, only wraps ``defender``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ray import tune

from search import archive, cache, defender_config, tables, verify
from search.adversary import AttackOutcome, adversary_search, curve_rows, error_text, family_worst
from search.attack_families import family_columns
from search.config import ExperimentConfig
from search.disk import storage_full
from search.ray_worker import in_ray_worker
from search.runner import Runner, StageRef, cache_key, run_stage
from trainables import evaluate as evaluate_stage, heldout, settings
from trainables import pretrain as pretrain_stage
from trainables.defence_spec import REFERENCE, SUPPRESSED, Common
from trainables.sources import is_local
from trainables.stages import STAGES
from trainables.strict import Strict

# What a defender trial reports to Tune and the Optuna study, and which way each is better.
OBJECTIVES = {"retain_acc": "max", "forget_acc_attacked": "min"}
# Compute per stage, one trials column each: every registered stage but ``evaluate``, which
# only scores.
FLOPS_COLUMNS = [f"flops.{s}" for s in STAGES if s != "evaluate"]


def flops_column(stage: str) -> str:
    """The trials column that holds ``stage``'s compute."""
    return f"flops.{stage}"


def defence_flops(row: dict) -> float:
    """What a row's model cost beyond the reference's pre-training: every stage's compute but
    the pre-training's and the attacks'."""
    skip = {flops_column("pretrain"), flops_column("attack")}
    return sum(row.get(c) or 0.0 for c in FLOPS_COLUMNS if c not in skip)


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
    body = cfg.model_dump(exclude={"storage", "cache_dir", "cache", "ray_address", "ray_num_cpus"})
    blob = json.dumps({"cfg": body, "params": params or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain_spec(cfg: ExperimentConfig, kind: str) -> pretrain_stage.Spec:
    """Spec of the reference (retain + forget) or pure (retain only) pre-training."""
    return pretrain_stage.Spec(
        setting=cfg.setting.model_dump(),
        model=cfg.model,
        loop=cfg.pretrain.reference if kind == "reference" else cfg.pretrain.pure,
        forget_fraction=cfg.pretrain.forget_fraction if kind == "reference" else 0.0,
        seed=cfg.seed,
    )


def pretrained(ctx: Context, kind: str) -> StageRef:
    """The reference or pure model (cached by its spec: trained once, reused by every run).

    With ``model.pretrained`` the model is loaded, not trained: the ``evaluate`` stage scores it
    and the returned ref points at the hub id or path itself (no copy in the cache)."""
    stage, spec = _pretrained_stage(ctx.cfg, kind)
    ref = run_stage(ctx.runner, stage, spec)
    if not ctx.cfg.model.pretrained:
        return ref
    source = spec.model.pretrained
    return dataclasses.replace(ref, path=Path(os.path.expanduser(source)) if is_local(source) else source)


def pretrained_key(cfg: ExperimentConfig, kind: str) -> str:
    """Cache key of the reference or pure model, before it is made."""
    return cache_key(*_pretrained_stage(cfg, kind), {})


def _pretrained_stage(cfg: ExperimentConfig, kind: str) -> tuple[str, Strict]:
    """(stage, spec) that makes the reference or pure model: pre-training, or with
    ``model.pretrained`` the ``evaluate`` stage that scores the loaded model."""
    if not cfg.model.pretrained:
        return "pretrain", pretrain_spec(cfg, kind)
    source = cfg.model.pretrained if kind == "reference" else cfg.model.pure_pretrained
    model = cfg.model.model_copy(update={"pretrained": source})
    return "evaluate", evaluate_stage.Spec(setting=cfg.setting.model_dump(), model=model)


def common_spec(cfg: ExperimentConfig) -> Common:
    """What every defence stage's spec takes from the experiment config."""
    return Common(setting=cfg.setting.model_dump(), load=cfg.model.load_options(), seed=cfg.seed,
                  forget_fraction=cfg.pretrain.forget_fraction)


def method_spec(cfg: ExperimentConfig, method: str, params: dict, fixed: dict | None = None) -> Strict:
    """Spec of defender ``method``'s own stage (``unlearn``, or TAR's) at ``params``: the
    method's default loop, overridden by the loop keys the config sets, then by ``fixed``
    (default: the config's ``defender.params`` for ``method``), then by ``params``; the same for
    hyperparameters."""
    fixed = cfg.defender.method_params(method) if fixed is None else fixed
    return defender_config.method_spec(cfg.defender, common_spec(cfg), method, {**fixed, **params})


def _data(cfg: ExperimentConfig):
    return settings.get(cfg.setting.name).build(cfg.setting)


def _attack_released(ctx: Context, trial_id: str, released: StageRef, ref_flops: float) -> AttackOutcome:
    n_examples = len(_data(ctx.cfg).forget_T)
    return adversary_search(ctx.runner, ctx.cfg, released, trial_id, ctx.experiment, n_examples,
                            ref_flops=ref_flops, exp_dir=ctx.exp_dir)


def _attacked_before(ctx: Context, trial_id: str, model: StageRef, ref_flops: float) -> dict:
    """The worst-case summary of a model this experiment may have attacked already (a
    robustifier's suppressed model: the driver's ``suppressed`` baseline), else attack it now."""
    found = archive.lookup(ctx.exp_dir, model.key)
    return found["summary"] if found else _attack_released(ctx, trial_id, model, ref_flops).summary()


def score_columns(cfg: ExperimentConfig, metrics: dict, outcome: AttackOutcome) -> dict:
    """A model's score columns with 95 % Wilson intervals over questions (``*_lo``, ``*_hi``).

    ``forget_acc`` and ``forget_acc_attacked`` are on V_rep (no selection saw it);
    ``forget_acc_full`` is all of V, ``forget_acc_attacked_sel`` the optimistic V_sel maximum
    the attack was chosen by. The attacked interval is over V_rep's questions at the seed mean
    (the spread over the chosen attack's seeds is ``forget_acc_attacked_sd``). Each attack
    family's own worst case is ``forget_acc_attacked.<family>`` (its strongest attack on V_sel,
    reported on V_rep)."""
    d = _data(cfg)
    n = heldout.sizes(len(d.retain_eval), len(d.forget_V), cfg.setting.report_fraction, cfg.setting.split_seed)
    cols = {
        "retain_acc": metrics["retain_acc"], "forget_acc": metrics["forget_acc_rep"],
        "forget_acc_full": metrics["forget_acc"], "forget_acc_sel": metrics["forget_acc_sel"],
        "forget_acc_attacked": outcome.attacked, "forget_acc_attacked_sel": outcome.attacked_sel,
        "forget_acc_attacked_sd": outcome.attacked_sd, "attacked_seeds": len(outcome.attacked_seeds),
        "best_attack_id": outcome.best_attack_id, "best_attack_step": outcome.best_step,
        "n_retain": n["retain"], "n_report": n["rep"], "n_select": n["sel"],
    }
    for key, size in (("retain_acc", n["retain"]), ("forget_acc", n["rep"]), ("forget_acc_attacked", n["rep"])):
        cols[f"{key}_lo"], cols[f"{key}_hi"] = heldout.wilson(cols[key], size)
    cols.update(family_columns(family_worst(outcome), n["rep"]))  # forget_acc_attacked.<family>
    return cols


def _row(ctx: Context, trial_id: str, kind: str, method: str, params: dict) -> dict:
    return {
        "experiment": ctx.experiment, "trial_id": trial_id, "kind": kind,
        "setting": ctx.cfg.setting.name, "method": method, "seed": ctx.cfg.seed,
        **{f"param.{k}": v for k, v in params.items()},
        **dict.fromkeys(FLOPS_COLUMNS, 0.0),
        "config_hash": config_hash(ctx.cfg, params), "code_version": cache.code_version(),
    }


def _finish(
    ctx: Context, row: dict, released: StageRef, outcome: AttackOutcome,
    defence_flops: float, ref_flops: float, curves: list[dict],
) -> dict:
    """Complete ``row`` from the released model and its attacks; write the trial's part.

    ``row`` already holds the ``flops.<stage>`` of the stages that made the model; ``defence_flops``
    is what making it cost beyond the reference's pre-training (unlearning and distillation for
    a defender, its own pre-training for the pure model, 0 for the reference).
    """
    m = released.result["metrics"]
    ok = outcome.attacked == outcome.attacked  # not NaN: at least one attack finished
    for a in outcome.attacks:
        if a.get("flops") is not None:
            a["compute_frac"] = a["flops"] / ref_flops
    row.update({
        "status": "ok" if ok else "error",
        "error": None if ok else "every attack failed; see attacks.parquet",
        **score_columns(ctx.cfg, m, outcome),
        "attacks_run": len(outcome.attacks),
        flops_column("attack"): outcome.flops,
        "compute_frac": defence_flops / ref_flops,
        "compute_frac_attack": outcome.flops / ref_flops,
        "feasible": ok and (ctx.cfg.search.retain_floor is None or m["retain_acc"] >= ctx.cfg.search.retain_floor),
        "model_key": released.key, "finished_at": time.time(),
        # the adversary study in the experiment's studies.journal (search/studies.py)
        "attack_study": outcome.study.study_name if outcome.study is not None else None,
    })
    row.update(verify.unverified_columns(row))
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


def suppress(ctx: Context, method: str, params: dict, reference: StageRef) -> StageRef:
    """The suppressed model: the first step of ``method``'s pipeline at searched ``params``
    (cached per distinct spec, so every trial of one unlearning config robustifies the same
    model)."""
    step = defender_config.suppressor(ctx.cfg.defender, common_spec(ctx.cfg), method, params)
    return run_stage(ctx.runner, step.stage, step.spec, {"model": reference})


def _flops(row: dict, stage: str, result: dict) -> None:
    """Charge ``stage``'s compute (``flops.<stage>``) and step count (``steps.<stage>``, when
    the stage reports one: a distillation may stop early) to ``row``."""
    row[flops_column(stage)] += result["flops"]
    if "steps" in result:
        row[f"steps.{stage}"] = result["steps"]


def defender(ctx: Context, trial_id: str, config: dict, reference: StageRef) -> dict:
    """Run ``config``'s point of the defender search through its pipeline (the unlearning that
    makes the suppressed model, then each robustifier on top) from ``reference``, and attack
    the released model. Returns the trial's row.

    With a robustifier the suppressed model is attacked too (the same seeded adversary search,
    so a cache hit when the driver's ``suppressed`` baseline already ran it): its attacked
    score is the trial's ``forget_acc_attacked_suppressed``, from which the tables derive
    robustness.
    """
    start = time.perf_counter()
    # the point resolved once into its pipeline's stage specs (search/defender_config.py resolve)
    resolved = defender_config.resolve(ctx.cfg.defender, common_spec(ctx.cfg), config)
    row = _row(ctx, trial_id, "defender", resolved.method, resolved.values)
    try:
        ref_flops = reference.result["flops"]
        row[flops_column("pretrain")] = ref_flops
        # each step runs on the outputs its inputs name (the first step's output is the
        # suppressed model)
        given, curves = {REFERENCE: reference}, []
        for step in resolved.steps:
            released = run_stage(ctx.runner, step.stage, step.spec, {role: given[src] for role, src in step.inputs.items()})
            given.setdefault(SUPPRESSED, released)
            curves += curve_rows(ctx.experiment, trial_id, None, step.name, released.result["curve"])
            _flops(row, step.stage, released.result)
        suppressed = given[SUPPRESSED]
        if released is not suppressed:
            teacher = _attacked_before(ctx, trial_id, suppressed, ref_flops)
            sm = suppressed.result["metrics"]
            row.update({
                "retain_acc_suppressed": sm["retain_acc"], "forget_acc_suppressed": sm["forget_acc_rep"],
                "forget_acc_attacked_suppressed": teacher["attacked"], "suppressed_key": suppressed.key,
            })
        outcome = _attack_released(ctx, trial_id, released, ref_flops)
        row["wall_s"] = time.perf_counter() - start
        row = _finish(ctx, row, released, outcome, defence_flops(row), ref_flops, curves)
    except Exception as e:
        if storage_full(e) is None:  # a full disk stops the run; --resume runs the trial again
            _fail(ctx, row, e, start)
        raise
    # near the front: attacked again by the verification attacker before the sampler sees it
    # (its part is written, so a failure here leaves the search-time row for the sweep)
    return verify.in_trial(ctx, row, released, ref_flops, len(_data(ctx.cfg).forget_T))


def defender_trial(config: dict, ctx: Context, reference: StageRef) -> None:
    """Tune function trainable: one defender configuration (the point Optuna drew), run by
    ``defender`` and reported once when done."""
    in_ray_worker()
    trial_id = tune.get_context().get_trial_id()
    row = defender(ctx, trial_id, dict(config), reference)
    metrics = {k: row[k] for k in (*OBJECTIVES, "forget_acc", "attacks_run", "compute_frac", "feasible",
                                   "forget_acc_attacked_lo", "forget_acc_attacked_hi", "forget_acc_attacked_sel",
                                   "verified", "forget_acc_attacked_search")}
    metrics["attacked"] = row["forget_acc_attacked"]  # the true value, for the progress line
    if not row["feasible"]:  # below the retain floor: the worst attacked score, to the search
        metrics["forget_acc_attacked"] = 1.0
    tune.report(metrics)


def verify_trial(ctx: Context, trial_id: str, ref_flops: float) -> dict:
    """Verify a finished trial's model (``search/verify.py``); its part is rewritten."""
    return verify.verify_trial(ctx, trial_id, ref_flops, len(_data(ctx.cfg).forget_T))


def suppressed_key(cfg: ExperimentConfig, method: str, reference: StageRef) -> str:
    """Cache key of the suppressed model of ``method`` at its fixed and default hyperparameters
    (the ``suppressed`` baseline's model, the teacher its robustified trials share)."""
    step = defender_config.suppressor(cfg.defender, common_spec(cfg), method, {})
    return cache_key(step.stage, step.spec, {"model": reference.key})


def suppressed_id(cfg: ExperimentConfig, method: str) -> str:
    """Trial id of the ``suppressed`` baseline of ``method``."""
    return "suppressed" if len(cfg.defender.methods) == 1 else f"suppressed-{method}"


def baseline(
    ctx: Context, kind: str, reference: StageRef | Callable[[], StageRef], model: StageRef | None = None,
    method: str | None = None,
) -> dict:
    """Score and attack a baseline: the pure model, the reference model, or (when a robustifier
    builds on it) the suppressed model of ``method``: its pipeline's first step at the fixed and
    default hyperparameters. ``reference`` may be a function that waits for it: the pure model
    is pre-trained and attacked while the reference still pre-trains, and only an attack budget
    in FLOPs (a fraction of the reference's) and the row's compute fractions wait for it."""
    start = time.perf_counter()
    trial_id = suppressed_id(ctx.cfg, method) if kind == "suppressed" else kind
    row = _row(ctx, trial_id, "baseline", kind, {"teacher": method} if method else {})
    wait = reference if callable(reference) else lambda: reference
    try:
        if kind == "suppressed":
            model = model or suppress(ctx, method, {}, wait())
            row[flops_column("pretrain")] = wait().result["flops"]
            stage = "unlearn"
        else:
            model = model or pretrained(ctx, kind)
            stage = "pretrain"
        _flops(row, stage, model.result)
        curves = curve_rows(ctx.experiment, trial_id, None, stage, model.result["curve"])
        budget_ref = wait().result["flops"] if ctx.cfg.attack.budget_flops is not None else None
        outcome = _attack_released(ctx, trial_id, model, budget_ref)
        ref_flops = wait().result["flops"]
        if kind == "suppressed":
            row["forget_acc_attacked_suppressed"] = outcome.attacked
        row["wall_s"] = time.perf_counter() - start
        # what making the model cost beyond the reference's pre-training: the pure model's own
        # pre-training, nothing for the reference, the unlearning for a suppressed model
        defence = {"pure": model.result["flops"], "reference": 0.0}.get(kind, defence_flops(row))
        return _finish(ctx, row, model, outcome, defence, ref_flops, curves)
    except Exception as e:
        if storage_full(e) is None:  # a full disk stops the run; --resume runs the trial again
            _fail(ctx, row, e, start)
        raise
