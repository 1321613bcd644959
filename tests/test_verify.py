"""Verification of the front (``search/verify.py``): a model the search under-attacked falls off
the front, the models entering in its place are verified in turn, and a verification never
lowers a reported worst case.

The attacks train for real (tiny models, a few steps); only the forget scores along each attack
are scripted, as a function of the model and the attack's learning rate × steps, so that which
attacker breaks which model is known in advance on any CPU."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.pareto import pareto_mask
from analysis.report import front_mask, write_report
from search import config, tables, trial, verify
from search.runner import Runner, run_stage
from trainables import attack
from trainables.stages import STAGES

# model: (ceiling, dose) — an attack recovers ceiling · min(1, lr · step / dose): a shallow
# model gives its facts back to a strong enough attack, a robust one has little to give
SHALLOW, ROBUST, SECOND = (0.8, 1e-2), (0.3, 1e-9), (0.25, 1e-9)
SEARCH_ONLY = "search-only"  # recovers 0.5 only at the search's own rate (≤ 2e-4), 0.1 otherwise


def _scripted(behaviour: dict[str, object]):
    """The attack stage, run for real, with its forget scores replaced by the script."""
    real = attack.run

    def run(spec, inputs, out_dir, model=None):
        result = real(spec, inputs, out_dir, model=model)
        how = behaviour[Path(inputs["model"]).name]
        lr = spec["loop"]["lr"]
        curve = []
        for step, key, value in result["curve"]:
            if key.startswith("forget_acc"):
                if how == SEARCH_ONLY:
                    value = 0.5 if lr <= 2e-4 and step > 0 else 0.1
                else:
                    ceiling, dose = how
                    value = ceiling * min(1.0, lr * step / dose)
            curve.append((step, key, value))
        result["curve"] = curve
        result["metrics"] = {**result["metrics"], **attack.checkpoint(curve)}
        return result

    return run


def _setup(tmp_path, monkeypatch, retain: dict[str, float], how: dict[str, object], **verify_kw):
    """An experiment of tiny defender 'trials' (pre-trained models of different seeds), each
    attacked at search time by one short, low-rate attack, its part written as a trial's."""
    from tests.conftest import TINY

    cfg = config.load(None, [*TINY, f"cache_dir={tmp_path / 'cache'}"])
    cfg = cfg.model_copy(update={
        "attack": config.AttackConfig(families=["finetune"], budget=1, prior=0, archive=0, reseeds=0, loop={"eval_every": 5},
                                      params={"kind": "full", "optimizer": "adamw", "data": "forget", "schedule": "constant", "n_examples": None,
                                              "lr": 1e-4, "steps": 5, "batch_size": 64}),
        # past_peak off unless a test turns it on: its stop rule reads the real (tiny) scores
        "verify": config.VerifyConfig(**{"families": ["finetune"], "params": {"kind": "full"}, "space": {"lr": [1e-3, 1e-2], "steps": [5, 10]},
                                         "budget_multiple": 3, "reseeds": 1, "past_peak": None, **verify_kw}),
    })
    runner = Runner(tmp_path / "cache", "local")
    ctx = trial.Context(cfg, "e", str(tmp_path / "e"), runner)
    reference = trial.pretrained(ctx, "reference")
    ref_flops = reference.result["flops"]
    models, behaviour = {}, {}
    for i, tid in enumerate(retain):
        spec = trial.pretrain_spec(cfg, "pure").model_copy(update={"seed": 100 + i})
        models[tid] = run_stage(runner, "pretrain", spec)
        behaviour[models[tid].key] = how[tid]
    monkeypatch.setitem(STAGES, "attack", _scripted(behaviour))
    for tid, model in models.items():
        outcome = trial._attack_released(ctx, tid, model, ref_flops)
        row = trial._row(ctx, tid, "defender", "graddiff", {})
        row[trial.flops_column("pretrain")] = ref_flops
        model.result["metrics"]["retain_acc"] = retain[tid]  # the trade-off the test needs
        trial._finish(ctx, row, model, outcome, 0.0, ref_flops, [])
    return ctx, ref_flops, models


def _rows(ctx) -> dict[str, dict]:
    return {tid: p["trials"][0] for tid, p in tables.read_parts(ctx.exp_dir).items()}


def test_an_under_attacked_front_model_falls_and_its_replacement_is_verified(tmp_path, monkeypatch):
    # search time: A (0.96, 0.30) and B (0.95, ~0.04) on the front; C (0.94, 0.25) behind B
    ctx, ref_flops, _ = _setup(tmp_path, monkeypatch, retain={"A": 0.96, "B": 0.95, "C": 0.94},
                               how={"A": ROBUST, "B": SHALLOW, "C": SECOND})
    before = _rows(ctx)
    assert before["B"]["forget_acc_attacked"] < 0.05 and not any(r["verified"] for r in before.values())
    assert {r["trial_id"] for r in verify.front(list(before.values()))} == {"A", "B"}

    rounds = []

    def verify_many(ids):
        rounds.append(sorted(ids))
        return [trial.verify_trial(ctx, t, ref_flops) for t in ids]

    lines = []
    verify.sweep(ctx.exp_dir, verify_many, lines.append)
    after = _rows(ctx)
    # B fell (the verification attacker's 10-step, higher-rate attack recovers its facts); C,
    # which B had hidden, entered the front and was verified in the next round
    assert rounds == [["A", "B"], ["C"]]
    assert after["B"]["forget_acc_attacked"] == pytest.approx(0.8) and after["B"]["attacked_by"] == "verify"
    assert after["B"]["forget_acc_attacked_search"] == before["B"]["forget_acc_attacked"]
    assert {r["trial_id"] for r in verify.front(list(after.values()))} == {"A", "C"}
    assert all(r["verified"] for r in verify.front(list(after.values())))
    assert any("B" in line and "left the front" in line for line in lines)
    # the verification's attacks are the model's rows too, its FLOPs counted in flops.attack
    part = tables.read_part(ctx.exp_dir, "B")
    mine = [a for a in part["attacks"] if a["attack.role"] == "verify"]
    assert mine and all(a["attack_id"].startswith("B-v-") for a in mine)
    assert after["B"]["verify_flops"] == pytest.approx(sum(a["flops"] for a in mine))
    assert after["B"]["flops.attack"] == pytest.approx(sum(a["flops"] for a in part["attacks"]))
    assert after["B"]["attacks_run"] == len(part["attacks"])
    # the verification's searched compute is budget_multiple × the search's (the last attack cut to fit)
    searched = sum(a["flops"] for a in mine if a["attack.source"] == "search")
    assert 0 < searched <= 3 * sum(a["flops"] for a in part["attacks"] if a["attack.role"] == "search") * (1 + 1e-9)

    # tables and report say what was verified; a second reader (pandas) sees the same
    tables.write_tables(ctx.exp_dir, tables.read_parts(ctx.exp_dir))
    t = pd.read_parquet(Path(ctx.exp_dir) / tables.TRIALS).set_index("trial_id")
    assert t["verified"].all() and (t["forget_acc_attacked"] >= t["forget_acc_attacked_search"]).all()
    assert t.loc["B", "forget_acc_attacked_verified_lo"] <= 0.8 <= t.loc["B", "forget_acc_attacked_verified_hi"]
    assert set(t.index[front_mask(t.reset_index()).to_numpy()]) == {"A", "C"}
    s = verify.summary(list(after.values()))
    assert s["fell"] == ["B"] and s["entered"] == ["C"] and s["verified"] == 3
    assert s["rise_max"] == pytest.approx(0.8 - before["B"]["forget_acc_attacked"])
    tables.write_text(ctx.exp_dir, tables.CONFIG, "experiment: e\n")
    md, page = write_report([ctx.exp_dir], tmp_path / "report")
    text = md.read_text()
    assert "1 of 2 search-time front models fell off the front (B 0.040 → 0.800)" in text and "| B |" in text
    assert text.index("Verified front") < text.index("Baselines") < text.index("Configuration")
    html = page.read_text()
    assert html.index('<svg id="front"') < html.index("<details><summary>config.yaml")
    assert html.count('class="point"') == 3 and 'class="search-time"' in html  # B's search-time point, faint


def test_a_failed_verification_is_marked_and_not_tried_again(tmp_path, monkeypatch):
    """A verification that raises an error without a message (a StopIteration once did, and the
    driver recorded ``str(e)``, empty, so the sweep retried the model for ever): the model is
    tried once, its row says why, and its search-time score stands."""
    ctx, ref_flops, _ = _setup(tmp_path, monkeypatch, retain={"A": 0.96, "B": 0.95}, how={"A": ROBUST, "B": SHALLOW})
    tries = []

    def verify_many(ids):  # as the driver did when a verification task failed
        tries.extend(ids)
        return [verify.mark_failed(ctx.exp_dir, t, str(StopIteration())) for t in ids]

    assert verify.sweep(ctx.exp_dir, verify_many, print, max_rounds=5) == []
    assert sorted(tries) == ["A", "B"]
    assert all(r["verify_error"] and not r["verified"] for r in _rows(ctx).values())
    tries.clear()
    assert verify.sweep(ctx.exp_dir, verify_many, print, max_rounds=5) == [] and tries == []  # a resumed sweep skips them


def test_verification_never_lowers_a_reported_worst_case(tmp_path, monkeypatch):
    # D breaks only at the search's own low rate, which the verification space excludes: the
    # verification attacker is weaker there, and the search's worst case stands
    ctx, ref_flops, _ = _setup(tmp_path, monkeypatch, retain={"D": 0.9, "E": 0.8},
                               how={"D": SEARCH_ONLY, "E": SHALLOW})
    before = _rows(ctx)
    rows = [trial.verify_trial(ctx, t, ref_flops) for t in ("D", "E")]
    for old, new in zip((before["D"], before["E"]), rows):
        assert new["verified"]
        assert new["forget_acc_attacked"] == max(old["forget_acc_attacked"], new["forget_acc_attacked_verified"])
        assert new["forget_acc_attacked"] >= old["forget_acc_attacked"]
    d, e = rows
    assert d["forget_acc_attacked_verified"] == pytest.approx(0.1) and d["forget_acc_attacked"] == pytest.approx(0.5)
    assert d["attacked_by"] == "search" and d["best_attack_id"] == before["D"]["best_attack_id"]
    assert e["attacked_by"] == "verify" and e["forget_acc_attacked"] > before["E"]["forget_acc_attacked"]


def test_a_trial_verifies_itself_only_near_the_front(tmp_path, monkeypatch):
    ctx, ref_flops, models = _setup(tmp_path, monkeypatch, retain={"A": 0.96, "F": 0.90},
                                    how={"A": ROBUST, "F": ROBUST}, margin=0.05, startup=1)
    rows = _rows(ctx)
    far = {**rows["F"], "forget_acc_attacked": 0.36}  # 0.06 behind A (0.96, 0.30): beyond the margin
    assert verify.in_trial(ctx, far, models["F"], ref_flops, 400) is far
    near = rows["F"]  # 0.30, level with A at a lower retain: within the margin
    got = verify.in_trial(ctx, near, models["F"], ref_flops, 400)
    assert got["verified"] and got["verified_in"] == "trial"
    off = ctx.cfg.model_copy(update={"verify": config.VerifyConfig(families=["finetune"], enabled=False)})
    assert verify.in_trial(trial.Context(off, "e", ctx.exp_dir, ctx.runner), rows["A"], models["A"], ref_flops, 400) is rows["A"]
    # by default, only once the outer sampler learns from scores (TPE: after 10 trials; random: never)
    for sampler, n in (("tpe", 10), ("random", None)):
        cfg = ctx.cfg.model_copy(update={"verify": config.VerifyConfig(families=["finetune"]), "search": config.SearchConfig(sampler=sampler)})
        assert verify.startup(cfg) == n
        assert verify.in_trial(trial.Context(cfg, "e", ctx.exp_dir, ctx.runner), rows["A"], models["A"], ref_flops, 400) is rows["A"]


def _scored_in_loop(monkeypatch, script):
    """Attacks whose forget scores at every evaluation are ``script(lr, step)``, replaced where
    the loop reads them, so its stop rules act on the script too (``_scripted`` replaces the
    curve after the attack)."""
    real_run, real_load = attack.run, attack.settings.load
    now: dict = {}

    class Scripted:
        def __init__(self, setting):
            self.setting = setting

        def __getattr__(self, name):
            return getattr(self.setting, name)

        def score(self, model, d, **parts):
            out = self.setting.score(model, d, **parts)
            value = script(now["lr"], now["evals"] * now["every"])
            now["evals"] += 1
            return {**out, **{k: value for k in out if k.startswith("forget_acc")}}

    def load(cfg):
        setting, d = real_load(cfg)
        return Scripted(setting), d

    def run(spec, inputs, out_dir, model=None):
        now.update(lr=spec["loop"]["lr"], every=spec["loop"]["eval_every"], evals=0)
        return real_run(spec, inputs, out_dir, model=model)

    monkeypatch.setattr(attack.settings, "load", load)
    monkeypatch.setitem(STAGES, "attack", run)


def _overshoots(lr: float, step: int) -> float:
    """A barely-unlearned model: a high rate peaks at 0.6 on its first evaluation and falls
    back; a gentle one (the prior's lower rate, 1.78e-3 here) climbs to 0.9."""
    if step == 0:
        return 0.1
    return (0.6 if step == 5 else 0.3) if lr > 2.5e-3 else min(0.9, 0.09 * step)


@pytest.mark.parametrize("past_peak", [None, {"evals": 2, "drop": 0.05}])
def test_stopping_overshot_attacks_lets_the_budget_reach_a_lower_rate(tmp_path, monkeypatch, past_peak):
    """The verification budget buys 60 attack steps; its prior starts at the middle rate
    (3.16e-3, mix then forget data, 40 steps each), then the upper one, then the lower one.
    Run to their end, the first two spend the budget at 0.6; stopped once past their peak
    (step 15), the high-rate ones leave 15 steps for the lower rate, which finds 0.9."""
    ctx, ref_flops, _ = _setup(tmp_path, monkeypatch, retain={"G": 0.9}, how={"G": ROBUST},
                               space={"lr": [1e-3, 1e-2], "steps": [5, 20]}, budget_multiple=12, past_peak=past_peak)
    _scored_in_loop(monkeypatch, _overshoots)
    row = trial.verify_trial(ctx, "G", ref_flops)
    mine = [a for a in tables.read_part(ctx.exp_dir, "G")["attacks"] if a["attack.role"] == "verify" and a["attack.source"] == "search"]
    runs = [(round(a["attack.lr"], 5), a["attack.steps_run"]) for a in mine]
    if past_peak is None:
        assert runs == [(0.00316, 40), (0.00316, 20)]
        assert row["forget_acc_attacked_verified"] == pytest.approx(0.6)
    else:  # the prior's third point is at the upper rate (5.62e-3) and stops too; the fourth is gentle
        assert runs[:3] == [(0.00316, 15), (0.00316, 15), (0.00562, 15)] and runs[3][0] == 0.00178 and runs[3][1] >= 10
        assert row["forget_acc_attacked_verified"] == pytest.approx(0.9)
    # the searched compute stays within the budget either way
    searched = sum(a["flops"] for a in mine)
    search = sum(a["flops"] for a in tables.read_part(ctx.exp_dir, "G")["attacks"] if a["attack.role"] == "search")
    assert searched <= 12 * search * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_front_and_margin_match_brute_force(seed):
    rng = random.Random(seed)
    rows = [{"trial_id": str(i), "kind": "defender", "status": "ok", "feasible": rng.random() > 0.1,
             "retain_acc": round(rng.random(), 1), "forget_acc_attacked": round(rng.random(), 1)} for i in range(30)]
    ok = [r for r in rows if r["feasible"]]
    values = np.array([[r["retain_acc"], r["forget_acc_attacked"]] for r in ok])
    expect = {r["trial_id"] for r, m in zip(ok, pareto_mask(values, [True, False])) if m}
    assert {r["trial_id"] for r in verify.front(rows)} == expect
    margin = 0.15
    for r in ok:  # within the margin: on the front once its attacked score is lowered by margin
        shifted = [{**o, "forget_acc_attacked": o["forget_acc_attacked"] - (margin if o is r else 0)} for o in ok]
        on_front = r["trial_id"] in {o["trial_id"] for o in verify.front(shifted)}
        assert verify.near_front(r, [o for o in ok if o is not r], margin) == on_front


def test_bad_verify_config_names_the_field():
    for text, field in (("verify.params={kind: nope}", "verify.params.kind"),
                        ("verify.batteries=[none]", "verify.batteries"),
                        ("verify.budget_multiple=0.5", "verify.budget_multiple"),
                        ("verify.space={steps: [10, 5]}", "verify.space.steps"),
                        ("verify.past_peak={evals: 0}", "verify.past_peak.evals"),
                        ("attack.past_peak={drop: 2}", "attack.past_peak.drop")):
        with pytest.raises(config.ConfigError, match=field.replace(".", r"\.")):
            config.load(None, [text])


def test_sampler_startup_is_optunas():
    import optuna

    from search.driver import SAMPLERS

    assert set(verify.SAMPLER_STARTUP) == {*SAMPLERS, "grid"}
    assert verify.SAMPLER_STARTUP["tpe"] == SAMPLERS["tpe"](0)._n_startup_trials
    assert verify.SAMPLER_STARTUP["nsga2"] == SAMPLERS["nsga2"](0)._population_size
    assert isinstance(SAMPLERS["random"](0), optuna.samplers.RandomSampler)


def test_an_archived_attack_with_all_examples_seeds_a_search_that_searches_examples():
    """The quick config fixes n_examples: null (all of T); its archived attacks carry it into the
    verification attacker's informed start, which searches n_examples: all is its top."""
    from spaces.dims import point_in

    cfg = config.load(None, [])
    space = verify.attacker(cfg, 1.0, 1.0).search_space()
    assert point_in(space, {"n_examples": None, "lr": 1e-3})["n_examples"] == space["n_examples"].high
