"""Adversary search: for one released model, an Optuna study over attacks that maximises the
recovered forget accuracy on V_sel; the chosen (attack, checkpoint) is re-run with fresh seeds
and reported on V_rep, which no selection step reads (``trainables/heldout.py``).

The search starts informed — the experiment's archive of attacks strongest against earlier
models (``search/archive.py``), then the literature's prior (``spaces/attack.py``), then TPE —
may spend a budget in FLOPs instead of a run count, and may stop weak attacks early by the
median rule or by successive halving over attack steps (the rule computed here, applied inside
the attack stage, so it holds on any worker).

Every attack, failed ones too, becomes a row of ``attacks.parquet`` and its scores along the
way rows of ``curves.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import optuna

from search import archive, studies
from search.attack_families import family_of, names_family, training_free
from search.runner import Runner, StageRef, pool_for, run_stage
from spaces import ATTACK_PRIOR as PRIOR
from spaces import BATTERIES
from spaces.attack import LORA_DEFAULTS
from spaces.attacks import PRIORS as FAMILY_PRIORS, SPACES as FAMILY_SPACES
from spaces.dims import MAX_COUNT, point_in, suggest
from trainables import attack as attack_stage
from trainables.families import FAMILIES, spec_fields, stage_of

if TYPE_CHECKING:
    from search.config import ExperimentConfig


@dataclass
class AttackOutcome:
    """What the adversary search found against one model.

    ``attacked`` is the worst case as reported: V_rep accuracy of the chosen (attack,
    checkpoint), averaged over the chosen attack's seeds (``attacked_seeds``, its own first);
    ``attacked_sel`` the optimistic V_sel maximum it was chosen by."""

    attacked: float = math.nan
    attacked_sel: float = math.nan
    attacked_sd: float = math.nan
    attacked_seeds: list[float] = field(default_factory=list)
    best_attack_id: str | None = None
    best_step: int | None = None
    flops: float = 0.0  # every attack run against the model, re-runs included
    search_flops: float = 0.0  # the searched attacks' (what ``attack.budget_flops`` limits)
    attacks: list[dict] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    study: optuna.Study | None = None  # the adversary search's study (None: batteries only)

    def summary(self) -> dict:
        """The figures a trial reports (and the archive keeps, so a model is attacked once)."""
        return {"attacked": self.attacked, "attacked_sel": self.attacked_sel, "attacked_sd": self.attacked_sd,
                "attacked_seeds": self.attacked_seeds, "best_attack_id": self.best_attack_id,
                "best_step": self.best_step, "flops": self.flops, "attacks_run": len(self.attacks)}


def seed_of(*parts: object) -> int:
    """A stable 31-bit seed from any strings/numbers (the same inputs give the same attacks)."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16) % (2**31)


LOOP_KEYS = ("optimizer", "schedule", "lr", "steps", "batch_size", "warmup_steps", "eval_every", "eval_at")


def attack_spec(cfg: ExperimentConfig, params: dict, seed: int, caps: dict | None = None) -> attack_stage.Spec:
    """The attack stage's spec for one point of the attack space (fixed ``attack.params``, then
    the point's own values; LoRA's defaults where a LoRA attack leaves one out); ``caps``: the
    search's limits on this run (``max_flops``, ``prune``, ``stop_at``, ``past_peak``)."""
    p = {**cfg.attack.params, **params}
    loop = {**cfg.attack.loop.model_dump(), **{k: p[k] for k in LOOP_KEYS if k in p}}
    if loop["schedule"].startswith("warmup") and not loop["warmup_steps"]:
        loop["warmup_steps"] = max(1, loop["steps"] // 10)
    lora = None
    if p.get("kind", "full") == "lora":
        q = {**LORA_DEFAULTS, **{k: v for k, v in p.items() if k in LORA_DEFAULTS}}
        lora = {"r": q["lora_r"], "alpha": q["lora_alpha"], "dropout": q["lora_dropout"], "targets": q["lora_targets"]}
    then = p.get("then", "none")
    return attack_stage.Spec(**{
        "then": None if then == "none" else {"family": then, **spec_fields(then, p)},
        "setting": cfg.setting.model_dump(),
        "load": cfg.model.load_options(),
        "loop": loop,  # validated into the spec's LoopConfig
        "data": p.get("data", "forget"),
        "retain_fraction": p.get("retain_fraction", cfg.attack.retain_fraction),  # a battery may fix it
        "loss_on": cfg.attack.loss_on,
        "n_examples": p.get("n_examples"),
        "lora": lora,
        "past_peak": cfg.attack.past_peak.model_dump() if cfg.attack.past_peak else None,
        "seed": seed,
        **(caps or {}),
    })


def family_spec(cfg: ExperimentConfig, params: dict, seed: int, caps: dict | None = None):
    """(stage name, spec) of one point of the attack space, whatever its family; ``caps`` (the
    search's limits: FLOPs left, pruning, past-peak) apply to the families that train."""
    family = family_of(cfg, params)
    spec = attack_stage.Spec if family == "finetune" else FAMILIES[family].Spec
    caps = {k: v for k, v in (caps or {}).items() if k in spec.model_fields}
    if family == "finetune":
        return "attack", attack_spec(cfg, params, seed, caps)
    fields = spec_fields(family, {**cfg.attack.params, **params})
    return stage_of(family), spec(setting=cfg.setting.model_dump(), load=cfg.model.load_options(), seed=seed,
                                  **fields, **caps)


def attack_columns(spec, n_examples: int | None, source: str, family: str = "finetune") -> dict:
    """The ``attack.*`` columns describing one attack: ``attack.family``, then the fine-tune's
    columns or the family's own (``attack.<family>_<field>``)."""
    if family != "finetune":
        own = spec.model_dump(exclude={"setting", "load", "seed"})
        return {"attack.source": source, "attack.family": family, **{f"attack.{family}_{k}": v for k, v in own.items()}}
    loop, lora = spec.loop, spec.lora or {}
    return {
        "attack.source": source,
        "attack.family": "finetune",
        "attack.kind": "lora" if spec.lora else "full",
        "attack.lr": loop.lr,
        "attack.steps": loop.steps,
        "attack.batch": loop.batch_size,
        "attack.optimizer": loop.optimizer,
        "attack.schedule": loop.schedule,
        "attack.lora_r": lora.get("r"),
        "attack.lora_alpha": lora.get("alpha"),
        "attack.lora_dropout": lora.get("dropout"),
        "attack.lora_targets": lora.get("targets"),
        "attack.data": spec.data,
        "attack.loss_on": spec.loss_on,
        "attack.n_examples": spec.n_examples or n_examples,
        "attack.then": spec.then["family"] if spec.then else "none",
        **{f"attack.{spec.then['family']}_{k}": v for k, v in (spec.then or {}).items() if k != "family"},
    }


def adversary_search(
    runner: Runner,
    cfg: ExperimentConfig,
    released: StageRef,
    trial_id: str,
    experiment: str,
    n_examples: int | None = None,
    seed: int | None = None,
    ref_flops: float | None = None,
    exp_dir: str | None = None,
    role: Literal["search", "verify"] = "search",
) -> AttackOutcome:
    """Run the configured batteries, then the adversary search against ``released`` (at most
    ``attack.budget`` attacks and, with ``attack.budget_flops``, until that fraction of
    ``ref_flops`` is spent), then re-run the attack chosen on V_sel ``attack.reseeds`` times.

    ``seed`` defaults to one derived from the experiment's seed and the model. ``exp_dir``
    names the experiment whose archive seeds the search and receives this model's strongest
    attacks (None: no archive). ``role`` ``verify`` is the verification attacker
    (``search/verify.py``): its attack ids carry ``-v``, its rows ``attack.role: verify``, its
    study and archive entry are its own, so the search-time ones stay as they were.
    """
    a = cfg.attack
    if a.budget_flops is not None and not ref_flops:
        raise ValueError("attack.budget_flops needs the reference's pre-training FLOPs (ref_flops)")
    out = AttackOutcome()
    seed = seed_of(cfg.seed, released.key) if seed is None else seed
    tag = trial_id if role == "search" else f"{trial_id}-v"  # prefix of the attack ids
    points: dict[str, dict] = {}  # attack id → its point of the attack space, to re-run it
    # attack id → the FLOPs cap it ran under: a re-run of an attack the budget cut is cut alike,
    # so that it trains the same schedule and evaluates at the cut step its checkpoint may be
    caps: dict[str, float | None] = {}
    seeds: dict[str, int] = {}  # attack id → its seed, from which its re-runs' seeds derive
    lock = threading.Lock()  # concurrent attacks append rows and add up FLOPs

    def run_attack(attack_id: str, params: dict, attack_seed: int, source: str, extra: dict | None = None) -> dict:
        stage, spec = family_spec(cfg, params, attack_seed, extra)
        row = {
            "experiment": experiment, "trial_id": trial_id, "attack_id": attack_id, "attack.role": role,
            **attack_columns(spec, n_examples, source, family_of(cfg, params)),
        }
        try:
            ref = run_stage(runner, stage, spec, {"model": released}, execute=pool.execute if pool else None)
        except Exception as e:
            with lock:
                out.attacks.append({**row, "seq": len(out.attacks), "status": "error", "error": error_text(e)})
            raise
        m, pruned = ref.result["metrics"], ref.result.get("pruned_at") is not None
        with lock:
            points[attack_id], seeds[attack_id] = params, attack_seed
            caps[attack_id] = spec.model_dump().get("max_flops")
            out.attacks.append({
                **row, "seq": len(out.attacks), "status": "pruned" if pruned else "ok", "error": None, **m,
                "attack.n_examples": ref.result["n_examples"], "attack.steps_run": ref.result["steps"],
                "flops": ref.result["flops"], "wall_s": ref.result["wall_s"],
                "train_wall_s": ref.result.get("train_wall_s"),
            })
            out.curves.extend(curve_rows(experiment, trial_id, attack_id, "attack", ref.result["curve"]))
            out.flops += ref.result["flops"]
            if source == "search":
                out.search_flops += ref.result["flops"]
        return ref.result

    pool = pool_for(runner, str(released.path), a.concurrency)
    try:
        for name in a.batteries:
            for i, params in enumerate(BATTERIES[name](a.battery_steps, cfg.setting.name)):
                try:
                    run_attack(f"{tag}-{name}{i}", params, seed_of(seed, name, i), name)
                except Exception:
                    pass  # recorded as a failed attack row; the battery goes on
        if a.budget:
            limit = a.budget_flops * ref_flops if a.budget_flops is not None else None
            out.study = _search(cfg, seed, tag, released, exp_dir, run_attack, lambda: out.search_flops, limit, role)
        _choose_and_reseed(cfg, out, seeds, points, caps, run_attack)
    finally:
        if pool is not None:
            pool.close()
    if exp_dir is not None:
        pre = released.result["metrics"].get("forget_acc_sel", 0.0)
        ranked = sorted((r for r in out.attacks if r["attack_id"] in points and r["attack.source"] != "reseed"),
                        key=lambda r: -r["forget_acc_sel_max"])[: max(1, a.archive)]
        archive.write(exp_dir, released.key, role, {
            "trial_id": trial_id, "summary": out.summary(),
            "attacks": [{"params": {**a.params, **points[r["attack_id"]]}, "score": r["forget_acc_sel_max"],
                         "gain": r["forget_acc_sel_max"] - pre} for r in ranked],
        })
    return out


def _search(cfg: ExperimentConfig, seed: int, trial_id: str, released: StageRef, exp_dir: str | None,
            run_attack, spent, limit: float | None, role: str = "search") -> optuna.Study:
    """The seeded TPE study: informed points first, then TPE, until the run count or the FLOPs
    budget ``limit`` is used up. Each attack gets the budget left as its cap (the stage cuts it
    to the steps that fit); the search ends with the first attack so cut that is not pruned. With
    ``attack.concurrency`` > 1 the attacks running at once share one remainder, so the budget
    may be exceeded by up to concurrency − 1 attacks."""
    a = cfg.attack
    # Few random start-up points: the informed start already spread the first attacks, and
    # under a FLOPs budget (run count unlimited) every random point is one TPE does not get.
    # Multivariate TPE over groups models the joint space, LoRA's conditional dimensions too.
    startup = 4 if a.budget_flops is not None else min(10, max(2, a.budget // 2))
    with warnings.catch_warnings():  # multivariate/group are marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=a.prune_startup, n_warmup_steps=a.prune_warmup)
              if a.pruner == "median" else optuna.pruners.NopPruner())
    study = studies.fresh(studies.attack_study(trial_id, released.key, role), studies.storage(exp_dir),
                          direction="maximize", sampler=sampler, pruner=pruner)
    lora_space, families = a.lora_space(), a.searched_families()
    start = informed_start(cfg, exp_dir, released.key)
    for point in start:
        study.enqueue_trial(point, skip_if_exists=True)
    tried = [family_of(cfg, p) for p in start]
    # training-free attacks of the informed start cost an evaluation each: not counted as runs
    free = sum(map(training_free, tried))
    # TPE draws among the families the start tried: a family it has not seen is all prior weight,
    # and at a small run budget one such draw costs the leading family a refinement
    drawn = [f for f in families if f in tried] or families

    repeats: dict[str, int] = {}  # point → how many times it ran: a repeat of it gets a seed of its own
    repeats_lock = threading.Lock()

    def objective(trial: optuna.Trial) -> float:
        family = trial.suggest_categorical("family", drawn) if "family" not in a.params and len(drawn) > 1 \
            else drawn[0]
        params = suggest(trial, a.family_space(family))  # each family's dimensions: conditional on it
        if family == "finetune" and {**a.params, **params}.get("kind", "full") == "lora":
            params.update(suggest(trial, lora_space))  # a conditional space
        then = {**a.params, **params}.get("then", "none") if family == "finetune" else "none"
        if then != "none":  # the composed family's dimensions, conditional on it
            params.update(suggest(trial, a.family_space(then)))
        if names_family(family, families, a.params):
            params["family"] = family
        extra = {"prune": prune_rule(cfg, study)}
        if limit is not None:
            extra["max_flops"] = max(0.0, limit - spent())
        # the attack's seed follows what it is, not when it ran: the same point gets the same seed in
        # a search of its family alone and in one across families (common random numbers: the two
        # compare on their choices, not on seed luck, and the cache serves the repeat)
        point = json.dumps({**params, "family": family}, sort_keys=True)
        with repeats_lock:
            repeats[point] = k = repeats.get(point, -1) + 1
        result = run_attack(f"{trial_id}-a{trial.number}", params, seed_of(seed, point, k), "search", extra)
        if result.get("truncated_at") is not None and result.get("pruned_at") is None and result.get("stopped_at") is None:
            study.stop()  # it ran to the end of the budget: nothing more fits (a stopped one left some)
        for step, key, value in result["curve"]:  # the V_sel trajectory, for the pruner
            if key == "forget_acc_sel":
                trial.report(value, step)
        if result.get("pruned_at") is not None:
            raise optuna.TrialPruned(f"pruned at step {result['pruned_at']}")
        return result["metrics"]["forget_acc_sel_max"]

    def stop_when_spent(study: optuna.Study, _trial) -> None:
        if limit is not None and spent() >= limit:
            study.stop()

    study.optimize(objective, n_trials=min(a.budget + free, MAX_COUNT), catch=(Exception,), n_jobs=a.concurrency,
                   callbacks=[stop_when_spent])
    return study


def informed_start(cfg: ExperimentConfig, exp_dir: str | None, model_key: str) -> list[dict]:
    """The first points of a model's adversary search: up to ``attack.archive`` of the attacks
    strongest against other models of this experiment, then up to ``attack.prior`` points of
    the literature's prior, each restricted to the searched dimensions (bounds applied), without
    repeats. Training-free families' points come first (uncounted). The other trained families'
    points (steer, soft prompt, prefix) come last and only while the counted points stay within
    half of ``attack.budget``: the rest is TPE's, to refine what the start found (on every panel
    measured the fine-tune is the strongest family; at the quick budget of 4, three such points
    would leave the fine-tune only its 2 prior points)."""
    a = cfg.attack
    families = a.searched_families()
    found = archive.strongest(exp_dir, a.archive, exclude_key=model_key) if exp_dir and a.archive else []
    # training-free families first (an evaluation each), then the archive, then the fine-tune's prior
    free = [{**p, "family": f} for f in families if f != "finetune" and training_free(f) for p in FAMILY_PRIORS[f]]
    tuned = [{**p, "family": f} for f in families if f != "finetune" and not training_free(f) for p in FAMILY_PRIORS[f]]
    finetune = [{**p, "family": "finetune"} for p in PRIOR[: a.prior]] if "finetune" in families else []
    out, seen, counted = [], set(), 0
    first_tuned = len(free) + len(found) + len(finetune)  # the tuned points are last
    for i, point in enumerate([*free, *found, *finetune, *tuned]):
        family = point.get("family", "finetune")
        if family not in families:
            continue  # an archived attack of a family this search does not draw
        space = a.family_space(family)
        if family == "finetune":
            then = {**a.params, **point}.get("then", "none")
            space = {**space, **a.lora_space(), **(a.family_space(then) if then in FAMILY_SPACES else {})}
        p = point_in(space, point)
        if family == "finetune" and p.get("kind", a.params.get("kind", "full")) != "lora":
            p = {k: v for k, v in p.items() if k not in a.lora_space()}
        if names_family(family, families, a.params):
            p["family"] = family
        key = json.dumps(p, sort_keys=True)
        if not p or key in seen:
            continue
        # past half the budget TPE gets the rest (with nothing counted yet, one tuned point joins)
        if i >= first_tuned and counted and counted >= a.budget // 2:
            break
        seen.add(key)
        out.append(p)
        counted += not training_free(family)
    return out


def choose(rows: list[dict]) -> dict | None:
    """The strongest attack on V_sel among attack rows that ran (ok or pruned; each row's
    checkpoint was already chosen on V_sel by the stage); the earliest run wins ties. Reads
    nothing of V_rep."""
    ran = [r for r in rows if r["status"] in ("ok", "pruned") and r.get("attack.source") != "reseed"]
    return max(ran, key=lambda r: (r["forget_acc_sel_max"], -r["seq"])) if ran else None


def _choose_and_reseed(cfg: ExperimentConfig, out: AttackOutcome, seeds: dict, points: dict, caps: dict,
                       run_attack) -> None:
    """Choose the strongest (attack, checkpoint) on V_sel, re-run it ``attack.reseeds`` times
    (to that checkpoint, under the FLOPs cap it ran under; not a deterministic family's), and set
    the outcome's V_rep worst case: the mean over its seeds."""
    best = choose(out.attacks)
    if best is None:
        return
    out.best_attack_id, out.best_step = best["attack_id"], int(best["best_step"])
    out.attacked_sel = best["forget_acc_sel_max"]
    values = [best["forget_acc_rep_at_best"]]
    # the re-runs' seeds derive from the attack's own (which names the model and the point), not
    # from its id: Tune's trial ids are random, and the same attack must re-run with the same seeds
    # a deterministic family's re-run (quantize's) would give the same model
    reseeds = cfg.attack.reseeds if FAMILIES[best.get("attack.family", "finetune")].SEEDED else 0
    for i in range(reseeds):
        try:
            result = run_attack(f"{best['attack_id']}-r{i + 1}", points[best["attack_id"]],
                                seed_of(seeds[best["attack_id"]], "reseed", i), "reseed",
                                {"stop_at": out.best_step, "past_peak": None, "max_flops": caps.get(best["attack_id"])})
        except Exception:
            continue  # a failed re-run is a row with its error; the mean is over those that ran
        values.append(next(v for s, k, v in result["curve"] if k == "forget_acc_rep" and s == out.best_step))
    out.attacked_seeds = values
    out.attacked = statistics.fmean(values)
    out.attacked_sd = statistics.stdev(values) if len(values) > 1 else math.nan


def family_worst(out: AttackOutcome) -> dict[str, float]:
    """Each family's worst case against the model: its attack chosen on V_sel, reported on V_rep
    (the overall chosen attack's family: the seed mean, ``out.attacked``; the others one run)."""
    values = {}
    for family in dict.fromkeys(r.get("attack.family", "finetune") for r in out.attacks):
        best = choose([r for r in out.attacks if r.get("attack.family", "finetune") == family])
        if best is not None:
            values[family] = out.attacked if best["attack_id"] == out.best_attack_id else best["forget_acc_rep_at_best"]
    return values


def prune_rule(cfg: ExperimentConfig, study: optuna.Study) -> dict | None:
    """The pruning rule for the next attack, as data the stage applies at its evaluations (it
    compares the attack's best V_sel accuracy so far with ``below[step]``). None until
    ``prune_startup`` attacks have finished, or with ``pruner: none``.

    * ``median``: at every step ≥ ``prune_warmup``, the median of the completed attacks' V_sel
      accuracy at that step (Optuna's ``MedianPruner``).
    * ``asha``: successive halving over attack steps (Optuna's ``SuccessiveHalvingPruner``
      rule, asynchronous): rungs at the first evaluations at or after r·η^k steps (r the
      minimum resource, ``prune_warmup`` or one evaluation; η ``reduction_factor``); at a rung
      an attack continues only if its best-so-far would rank in the top 1/η of every finished
      attack's best-so-far there (the first always continues).
    """
    a = cfg.attack
    if a.pruner == "none":
        return None
    states = (optuna.trial.TrialState.COMPLETE,) + ((optuna.trial.TrialState.PRUNED,) if a.pruner == "asha" else ())
    done = study.get_trials(deepcopy=False, states=states)
    if len(done) < a.prune_startup:
        return None
    if a.pruner == "median":
        steps = sorted({s for t in done for s in t.intermediate_values if s >= a.prune_warmup})
        below = {s: statistics.median([t.intermediate_values[s] for t in done if s in t.intermediate_values])
                 for s in steps}
        return {"warmup": a.prune_warmup, "below": {str(s): v for s, v in below.items()}}
    steps = sorted({s for t in done for s in t.intermediate_values})
    r = max(a.prune_warmup, a.loop.eval_every, 1)
    rungs, k = [], 0
    while steps and r * a.reduction_factor ** k <= steps[-1]:
        rung = next(s for s in steps if s >= r * a.reduction_factor ** k)
        if rung not in rungs:
            rungs.append(rung)
        k += 1
    below = {}
    for rung in rungs:
        best = sorted((max(v for s, v in t.intermediate_values.items() if s <= rung)
                       for t in done if rung in t.intermediate_values), reverse=True)
        idx = max(0, (len(best) + 1) // a.reduction_factor - 1)  # +1: the new attack competes too
        if idx < len(best):
            below[str(rung)] = best[idx]
    return {"warmup": r, "below": below}


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
