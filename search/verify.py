"""Verification: every model on the reported front has survived a stronger, independent attacker.

The defender search minimises the attacked score, so it favours the models whose few search-time
attacks happened to miss — the winner's curse, one level up from choosing an attack. A model
whose search-time worst case would put it on the front, or within ``verify.margin`` of it, is
attacked again by a *verification attacker* before its score is reported:

* seeds of its own (derived from the model and ``verify``, not the search's);
* the whole attack space, data modes included, unless ``verify.params`` fixes dimensions
  (``verify.space`` sets bounds; default the search's ``attack.space``);
* attacks up to ``verify.steps_multiple`` × the space's longest, each stopped once it has
  overshot its peak (``verify.past_peak``), so the budget reaches more points;
* the prior in full (every data mode × rate of ``spaces/attack.py``), then TPE (the experiment's
  archive only with ``verify.archive``), under ``verify.budget_multiple`` × the compute the
  search spent on that model (its searched and battery attacks; a FLOPs budget, so the last
  attack is cut to fit);
* the configured batteries (``verify.batteries``, default ``attack.batteries``) and
  ``verify.reseeds`` re-runs of its strongest attack.

Each attacker chooses its (attack, checkpoint) on V_sel and reports it on V_rep; the model's
reported worst case is the stronger of the two V_rep figures. That last choice reads V_rep, and
leans toward the attacker — a defence is never reported safer for having been verified.

In a trial, verification runs before the trial reports to the outer sampler, so the sampler
learns from verified scores near the front — once the sampler learns from scores at all
(``verify.startup``, default the outer sampler's random start-up: TPE's first 10 trials,
NSGA-II's first generation; a random or grid search learns nothing, and the first trials are
always on the front of what has finished). After the search, :func:`sweep`
verifies every unverified model on the front, recomputes the front (a model that fell leaves it,
the ones that enter in its place are verified in turn) and repeats until the front is verified.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from pydantic import Field, ValidationError

from analysis.pareto import pareto_mask

from search import tables
from search.disk import storage_full
from search.adversary import AttackOutcome, adversary_search, error_text, family_worst, seed_of
from search.attack_config import AttackConfig, PastPeak
from search.attack_families import family_columns, fit_families
from search.runner import StageRef, rebuild
from spaces import ATTACK_PRIOR, ATTACK_SPACE, BATTERIES
from spaces.dims import MAX_COUNT
from trainables import heldout
from trainables.strict import Strict

if TYPE_CHECKING:
    from search.config import ExperimentConfig
    from search.trial import Context

# The columns a verification rewrites when it finds a stronger attack than the search did.
SCORE_COLUMNS = ("forget_acc_attacked", "forget_acc_attacked_lo", "forget_acc_attacked_hi",
                 "forget_acc_attacked_sel", "forget_acc_attacked_sd", "attacked_seeds",
                 "best_attack_id", "best_attack_step")


class VerifyConfig(Strict):
    """The verification attacker (``search/verify.py``)."""

    enabled: bool = True
    # verify a model whose search-time worst case is within this much attacked forget accuracy
    # of the front (0: only the front itself); in trials only, the sweep verifies the front
    margin: float = Field(0.05, ge=0, le=1)
    # the verification's searched compute per model: this × what the search spent on that model
    budget_multiple: float = Field(2.0, ge=1, le=1000)
    # its longest attack: this × the search space's (a constant-rate attack still climbing at
    # the space's end is where a brute-force grid found the quick front's headline model weaker
    # than reported)
    steps_multiple: float = Field(2.0, ge=1, le=100)
    archive: int = Field(0, ge=0)  # the search's strongest attacks first (0: independent of them)
    reseeds: int = Field(3, ge=0, le=100)
    prior: int | None = Field(None, ge=0, le=len(ATTACK_PRIOR))  # None: every prior point
    params: dict[str, Any] = {}  # fixed attack dimensions; none: the full space
    space: dict[str, Any] | None = None  # bounds; None: attack.space
    batteries: list[str] | None = None  # None: attack.batteries
    families: list[str] | None = None  # attack families; None: every registered family
    battery_steps: int | None = Field(None, ge=1, le=MAX_COUNT)
    # stop a verification attack that has overshot its peak (attack.past_peak), so the budget
    # reaches the next rate: on the quick front's barely-unlearned models the 1e-3 attacks
    # peak at step 20–40 of 400, and a lower rate is what recovers them. 4 evaluations and
    # 0.05 lost no verification attack's best by more than 0.005 on 289 quick-run curves.
    past_peak: PastPeak | None = PastPeak()
    # defender trials finished before a trial verifies itself (the sweep verifies the rest);
    # None: once the outer sampler learns from scores (SAMPLER_STARTUP)
    startup: int | None = Field(None, ge=0)


# Trials after which each outer sampler (search/driver.py SAMPLERS, at Optuna's defaults) starts
# to learn from the scores it is told; None: never (random draws, a grid).
SAMPLER_STARTUP: dict[str, int | None] = {"tpe": 10, "nsga2": 50, "random": None, "grid": None}


def startup(cfg: ExperimentConfig) -> int | None:
    """Finished defender trials before a trial verifies itself (None: never in a trial)."""
    return SAMPLER_STARTUP[cfg.search.sampler] if cfg.verify.startup is None else cfg.verify.startup


def attacker(cfg: ExperimentConfig, base_flops: float, ref_flops: float) -> AttackConfig:
    """The verification attacker's ``AttackConfig`` for a model the search spent ``base_flops``
    on (searched and battery attacks, not re-runs). Raises ValueError naming the ``verify.``
    field on a bad value."""
    a, v = cfg.attack, cfg.verify
    for name in v.batteries or []:
        if name not in BATTERIES:
            raise ValueError(f"verify.batteries: unknown battery {name!r} (one of {sorted(BATTERIES)})")
    raw = a.model_dump()
    space = dict(a.space if v.space is None else v.space)
    steps = space.get("steps", [ATTACK_SPACE["steps"].low, ATTACK_SPACE["steps"].high])
    if ("steps" not in v.params and isinstance(steps, (list, tuple)) and len(steps) == 2
            and all(isinstance(x, (int, float)) for x in steps) and steps[0] <= steps[1]):  # else the check names it
        space["steps"] = [steps[0], int(round(steps[1] * v.steps_multiple))]
    raw.update(
        params=dict(v.params), space=space, reseeds=v.reseeds, archive=v.archive,
        prior=len(ATTACK_PRIOR) if v.prior is None else v.prior,
        batteries=list(a.batteries if v.batteries is None else v.batteries),
        battery_steps=a.battery_steps if v.battery_steps is None else v.battery_steps,
        past_peak=v.past_peak.model_dump() if v.past_peak else None,
        families=v.families,
    )
    if base_flops > 0:  # a FLOPs budget: the run count is what fits
        raw.update(budget=None, budget_flops=v.budget_multiple * base_flops / ref_flops)
    else:  # nothing measured (a search whose every attack failed): a multiple of its run count
        raw.update(budget=max(1, math.ceil(v.budget_multiple * (a.budget or 1))), budget_flops=None)
    try:
        out = AttackConfig(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"verify.{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}") from None
    fit_families(out, cfg, "verify.")
    return out


def dominates(a: dict, b: dict, margin: float = 0.0) -> bool:
    """Model ``a`` dominates ``b`` with ``margin`` taken off ``b``'s attacked score: at least as
    high a retain accuracy and an attacked score at least ``margin`` lower, one of them strictly."""
    rb, fb = b["retain_acc"], b["forget_acc_attacked"] - margin
    ra, fa = a["retain_acc"], a["forget_acc_attacked"]
    return ra >= rb and fa <= fb and (ra > rb or fa < fb)


def near_front(row: dict, others: list[dict], margin: float) -> bool:
    """True when no other model dominates ``row`` with ``margin`` taken off its attacked score.
    With margin 0 that is ``row`` being on the front of ``row`` + ``others``."""
    return not any(dominates(o, row, margin) for o in others)


def candidates(rows: list[dict]) -> list[dict]:
    """The rows that may stand on the front: ok, feasible defender trials (as the report's)."""
    return [r for r in rows if r.get("kind") == "defender" and r.get("status") == "ok"
            and r.get("feasible", True) is not False and r.get("forget_acc_attacked") == r.get("forget_acc_attacked")]


def front(rows: list[dict]) -> list[dict]:
    """The front of ``rows``' candidates (retain ↑, attacked forget ↓), as the report draws it."""
    pool = candidates(rows)
    if not pool:
        return []
    mask = pareto_mask(np.array([[r["retain_acc"], r["forget_acc_attacked"]] for r in pool], dtype=float), [True, False])
    return [r for r, on in zip(pool, mask) if on]


def unverified_columns(row: dict) -> dict:
    """The verification columns of a row no verification attacker has seen yet."""
    return {"forget_acc_attacked_search": row.get("forget_acc_attacked"),
            "forget_acc_attacked_search_lo": row.get("forget_acc_attacked_lo"),
            "forget_acc_attacked_search_hi": row.get("forget_acc_attacked_hi"),
            "verified": False, "attacked_by": "search", "verify_flops": 0.0}


def _search_flops(attacks: list[dict]) -> float:
    """What the search spent on a model before its re-runs: searched and battery attacks."""
    return sum(r.get("flops") or 0.0 for r in attacks
               if r.get("attack.role", "search") == "search" and r.get("attack.source") != "reseed")


def apply(row: dict, part: dict, outcome: AttackOutcome, ref_flops: float, where: str = "sweep") -> dict:
    """``row`` (a trial's row, its part's ``trials[0]``) with the verification ``outcome``
    folded in: the verified figure and its interval, the stronger worst case of both attackers
    reported, the verification's FLOPs added to ``flops.attack``; its attack and curve rows
    appended to ``part``. ``where``: ``trial`` (before the outer sampler saw the trial) or
    ``sweep`` (after the search). Returns the new row (``part`` is changed in place)."""
    row = dict(row)
    n = row["n_report"]
    lo, hi = heldout.wilson(outcome.attacked, n)
    row.update({
        "verified": outcome.attacked == outcome.attacked,  # at least one verification attack ran
        "forget_acc_attacked_verified": outcome.attacked,
        "forget_acc_attacked_verified_lo": lo, "forget_acc_attacked_verified_hi": hi,
        "verify_flops": outcome.flops, "verify_attacks_run": len(outcome.attacks),
        "verify_study": outcome.study.study_name if outcome.study is not None else None,
        "verified_in": where,
    })
    if outcome.attacked > row["forget_acc_attacked"]:  # False for NaN: a failed verification changes nothing
        row.update({
            "forget_acc_attacked": outcome.attacked, "forget_acc_attacked_lo": lo, "forget_acc_attacked_hi": hi,
            "forget_acc_attacked_sel": outcome.attacked_sel, "forget_acc_attacked_sd": outcome.attacked_sd,
            "attacked_seeds": len(outcome.attacked_seeds), "best_attack_id": outcome.best_attack_id,
            "best_attack_step": outcome.best_step, "attacked_by": "verify",
        })
    row.update(family_columns(family_worst(outcome), n, row))  # a family the verifier found stronger
    row["flops.attack"] = (row.get("flops.attack") or 0.0) + outcome.flops
    row["compute_frac_attack"] = row["flops.attack"] / ref_flops
    row["attacks_run"] = (row.get("attacks_run") or 0) + len(outcome.attacks)
    seq0 = len(part.get("attacks", []))
    for a in outcome.attacks:
        if a.get("flops") is not None:
            a["compute_frac"] = a["flops"] / ref_flops
    part["attacks"] = [*part.get("attacks", []), *({**a, "seq": seq0 + a["seq"]} for a in outcome.attacks)]
    part["curves"] = [*part.get("curves", []), *outcome.curves]
    part["trials"] = [row]
    return row


def verify_trial(ctx: Context, trial_id: str, ref_flops: float, n_examples: int | None,
                 released: StageRef | None = None, where: str = "sweep") -> dict:
    """Attack trial ``trial_id``'s released model with the verification attacker and rewrite its
    part with the outcome folded in (:func:`apply`). ``released`` defaults to the cache entry of
    the row's ``model_key`` (remade from its recipe if it was deleted). Returns the new row."""
    part = tables.read_part(ctx.exp_dir, trial_id)
    row = part["trials"][0]
    # retention (cache.keep) may have deleted a model that was off the front: made again
    released = released or rebuild(ctx.runner, row["model_key"])
    start = time.perf_counter()
    cfg = ctx.cfg.model_copy(update={"attack": attacker(ctx.cfg, _search_flops(part.get("attacks", [])), ref_flops)})
    outcome = adversary_search(ctx.runner, cfg, released, trial_id, ctx.experiment, n_examples,
                               seed=seed_of(ctx.cfg.seed, "verify", released.key), ref_flops=ref_flops,
                               exp_dir=ctx.exp_dir, role="verify")
    row = apply(row, part, outcome, ref_flops, where)
    row["wall_s"] = (row.get("wall_s") or 0.0) + time.perf_counter() - start
    tables.write_part(ctx.exp_dir, trial_id, part)
    return row


def in_trial(ctx: Context, row: dict, released: StageRef, ref_flops: float, n_examples: int | None) -> dict:
    """Verify a just-finished trial (its part written) when its search-time worst case is within
    ``verify.margin`` of the front of the trials finished so far; return its row as reported."""
    v, first = ctx.cfg.verify, startup(ctx.cfg)
    if not v.enabled or first is None or not candidates([row]):
        return row
    others = [r for r in tables.trial_rows(ctx.exp_dir) if r["trial_id"] != row["trial_id"]]
    others = candidates(others)
    if len(others) < first or not near_front(row, others, v.margin):
        return row
    try:
        return verify_trial(ctx, row["trial_id"], ref_flops, n_examples, released, "trial")
    except Exception as e:  # the search-time row stands, marked; the trial still reports
        if storage_full(e) is not None:
            raise  # the run stops; --resume verifies it
        return mark_failed(ctx.exp_dir, row["trial_id"], error_text(e))


def mark_failed(exp_dir: str, trial_id: str, error: str) -> dict:
    """Record on a trial's row that its verification failed (``verify_error``): it stays
    unverified, and the sweep does not try it again."""
    part = tables.read_part(exp_dir, trial_id)
    # never empty: an empty error would read as none, and the sweep would try the model again
    row = {**part["trials"][0], "verify_error": error or "failed (the error has no message)"}
    tables.write_part(exp_dir, trial_id, {**part, "trials": [row]})
    return row


def sweep(exp_dir: str, verify_many: Callable[[list[str]], list[dict]], say: Callable[[str], None] = print,
          max_rounds: int = MAX_COUNT) -> list[dict]:
    """Verify every unverified model on the front of the experiment's finished trials, recompute
    the front, and repeat until every model on it is verified. ``verify_many(trial_ids)`` runs
    :func:`verify_trial` on each (in parallel where it can) and returns the new rows. Returns
    those rows, in the order verified."""
    done: list[dict] = []
    tried: set[str] = set()  # a model is verified once per sweep, whatever its row says after
    for _ in range(max_rounds):
        rows = tables.trial_rows(exp_dir)
        todo = [r["trial_id"] for r in front(rows)
                if not r.get("verified") and not r.get("verify_error") and r["trial_id"] not in tried]
        if not todo:
            break
        tried.update(todo)
        new = [r for r in verify_many(todo) if r.get("verified")]
        tables.merge(exp_dir, todo)  # their parts were rewritten
        after = {r["trial_id"] for r in front([*(r for r in rows if r["trial_id"] not in todo), *new])}
        for r in new:
            fell = r["trial_id"] not in after
            say(f"verified {r['trial_id']}: attacked {r['forget_acc_attacked_search']:.3f} at search time, "
                f"{r['forget_acc_attacked_verified']:.3f} by the verification attacker"
                + (" — left the front" if fell else " — stays on the front"))
        done += new
        entered = sorted(after - {r["trial_id"] for r in front(rows)})
        if entered:
            say(f"entered the front in their place: {', '.join(entered)}; verifying them in turn")
    return done


def summary(rows: list[dict]) -> dict:
    """What verification did to an experiment's front: the models verified, how many of the
    search-time front's models fell off it, and by how much the verified ones rose."""
    verified = [r for r in candidates(rows) if r.get("verified")]
    search_time = [{**r, "forget_acc_attacked": r.get("forget_acc_attacked_search", r["forget_acc_attacked"])}
                   for r in candidates(rows)]
    before = {r["trial_id"] for r in front(search_time)}
    after = {r["trial_id"] for r in front(rows)}
    rise = [r["forget_acc_attacked"] - r["forget_acc_attacked_search"] for r in verified]
    return {"verified": len(verified), "search_front": len(before), "front": len(after),
            "fell": sorted(before - after), "entered": sorted(after - before),
            "rise_mean": sum(rise) / len(rise) if rise else math.nan, "rise_max": max(rise, default=math.nan)}

