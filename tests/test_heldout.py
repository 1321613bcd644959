"""The honest worst case: select on V_sel, report on V_rep, intervals, re-seeds, the informed
start, the FLOPs budget and successive halving."""

from __future__ import annotations

import math
import random

import numpy as np
import optuna
import pytest
import torch

from search import archive, config, tables
from search.adversary import adversary_search, choose, informed_start, prune_rule
from search.attack_families import all_family_dims
from search.runner import Runner
from search.trial import Context, pretrained
from trainables import attack, heldout
from spaces.dims import point_in
from trainables.loop import LoopConfig


@pytest.mark.parametrize("n,frac", [(400, 0.5), (201, 0.5), (7, 0.3), (2, 0.9), (1000, 0.25)])
def test_halves_of_v_are_disjoint_cover_v_and_are_seeded(n, frac):
    sel, rep = heldout.report_split(n, frac, seed=3)
    assert set(sel.tolist()).isdisjoint(rep.tolist())
    assert sorted(sel.tolist() + rep.tolist()) == list(range(n))
    assert len(rep) == min(n - 1, max(1, round(n * frac))) and len(sel) >= 1
    again, _ = heldout.report_split(n, frac, seed=3)
    other, _ = heldout.report_split(n, frac, seed=4)
    assert torch.equal(sel, again) and (n < 10 or not torch.equal(sel, other))


def test_v_metrics_are_means_over_each_half():
    hits = torch.tensor([True, False] * 50)
    sel, rep = heldout.report_split(100, 0.5, 0)
    m = heldout.v_metrics(hits, 0.5, 0)
    assert m["forget_acc"] == 0.5
    assert m["forget_acc_sel"] == pytest.approx(hits[sel].float().mean().item())
    assert m["forget_acc_rep"] == pytest.approx(hits[rep].float().mean().item())


@pytest.mark.parametrize("p,n", [(0.05, 200), (0.25, 200), (0.5, 100), (0.9, 400)])
def test_wilson_interval_covers_p_in_95_percent_of_draws(p, n):
    rng = np.random.default_rng(0)
    draws = rng.binomial(n, p, size=4000) / n
    covered = np.mean([lo <= p <= hi for lo, hi in (heldout.wilson(float(x), n) for x in draws)])
    assert 0.93 <= covered <= 0.975, covered


def test_wilson_reference_values():
    # Wilson (1927) / Newcombe (1998) Table I: 81 of 263 → [0.2553, 0.3662]; 0 of 10 → [0, 0.2775]
    lo, hi = heldout.wilson(81 / 263, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = heldout.wilson(0.0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    assert all(math.isnan(v) for v in heldout.wilson(float("nan"), 10))


def _noise_attack(rng: torch.Generator, n_v: int, p: float, checkpoints: int, seq: int) -> dict:
    """An attack against a model whose answers are coin flips, redrawn at every checkpoint."""
    curve = []
    for c in range(checkpoints):
        hits = torch.rand(n_v, generator=rng) < p
        curve += [(c * 10, k, v) for k, v in heldout.v_metrics(hits, 0.5, 0).items()]
    return {"status": "ok", "seq": seq, "attack.source": "search", **attack.checkpoint(curve)}


def test_selection_bias_is_on_v_sel_only():
    """A model at chance, attacked 20 times × 10 checkpoints, 300 times over: the chosen
    (attack, checkpoint) scores far above chance on V_sel (the winner's curse) and at chance on
    V_rep, which no selection read."""
    rng, p, n_v, draws = torch.Generator().manual_seed(0), 0.25, 200, 300
    sel, rep = [], []
    for _ in range(draws):
        best = choose([_noise_attack(rng, n_v, p, 10, i) for i in range(20)])
        sel.append(best["forget_acc_sel_max"])
        rep.append(best["forget_acc_rep_at_best"])
    half = n_v // 2
    se = math.sqrt(p * (1 - p) / (half * draws))  # of the mean of the V_rep figures
    assert np.mean(sel) > p + 0.08  # max of 200 binomial means on 100 items: ≈ p + 2.7 sd
    assert abs(np.mean(rep) - p) < 3 * se, (np.mean(rep), p, se)


def test_checkpoint_is_chosen_on_v_sel_and_reported_on_v_rep():
    curve = [(0, "forget_acc_sel", 0.1), (0, "forget_acc_rep", 0.9), (0, "forget_acc", 0.5),
             (10, "forget_acc_sel", 0.4), (10, "forget_acc_rep", 0.2), (10, "forget_acc", 0.3),
             (20, "forget_acc_sel", 0.4), (20, "forget_acc_rep", 0.7), (20, "forget_acc", 0.55)]
    c = attack.checkpoint(curve)
    assert c == {"forget_acc_sel_max": 0.4, "best_step": 10, "forget_acc_rep_at_best": 0.2,
                 "forget_acc_max": 0.55, "forget_acc_final": 0.55}


def _cfg(tmp_path, **attack_kw):
    from tests.conftest import TINY

    cfg = config.load(None, [*TINY, f"cache_dir={tmp_path / 'cache'}"])
    kw = {"budget": 3, "params": {"kind": "full", "optimizer": "adamw", "data": "forget"},
          "loop": LoopConfig(eval_every=2), "space": {"steps": [4, 6]}, **attack_kw}
    return cfg.model_copy(update={"attack": config.AttackConfig(**{"families": ["finetune"], **kw})})


def _spy_scores(monkeypatch, rep_seed: int, sel_seed: int | None = None) -> None:
    """Replace V's halves by seeded noise: V_rep always (the spy: any selection that read it
    would change with ``rep_seed``), V_sel too when ``sel_seed`` is given (so that attacks
    differ in strength on a tiny model that scores 0 everywhere)."""
    real = heldout.v_metrics
    rep_rng = random.Random(rep_seed)
    sel_rng = random.Random(sel_seed) if sel_seed is not None else None

    def spy(hits, fraction, seed):
        m = real(hits, fraction, seed)
        m["forget_acc_rep"] = rep_rng.random()
        if sel_rng is not None:
            m["forget_acc_sel"] = sel_rng.random()
        return m

    monkeypatch.setattr(heldout, "v_metrics", spy)


def _search_once(tmp_path, monkeypatch, rep_seed: int, name: str):
    _spy_scores(monkeypatch, rep_seed, sel_seed=7)
    cfg = _cfg(tmp_path / name, pruner="asha", prune_startup=1, prune_warmup=2, reseeds=1)
    runner = Runner(tmp_path / name / "cache", "local")  # no shared cache: every curve recomputed
    model = pretrained(Context(cfg, "e", str(tmp_path / name / "e"), runner), "pure")
    return adversary_search(runner, cfg, model, "t", "e", 400, seed=0)


def test_no_selection_step_reads_v_rep(tmp_path, monkeypatch):
    """The same search with V_rep replaced by two different streams of noise: the same attacks
    are tried, the same ones pruned, the same (attack, checkpoint) chosen; only the reported
    V_rep figures differ."""
    a = _search_once(tmp_path, monkeypatch, rep_seed=1, name="a")
    b = _search_once(tmp_path, monkeypatch, rep_seed=2, name="b")
    assert [t.params for t in a.study.trials] == [t.params for t in b.study.trials]
    assert [t.state for t in a.study.trials] == [t.state for t in b.study.trials]
    assert (a.best_attack_id, a.best_step, a.attacked_sel) == (b.best_attack_id, b.best_step, b.attacked_sel)
    assert a.attacked != b.attacked
    chosen = next(r for r in a.attacks if r["attack_id"] == a.best_attack_id)
    assert a.attacked_seeds[0] == chosen["forget_acc_rep_at_best"] and len(a.attacked_seeds) == 2
    assert a.attacked == pytest.approx(np.mean(a.attacked_seeds))


def test_chosen_attack_is_rerun_to_its_checkpoint_and_counted(tmp_path, monkeypatch):
    _spy_scores(monkeypatch, rep_seed=1, sel_seed=3)
    cfg = _cfg(tmp_path, reseeds=2)
    runner = Runner(tmp_path / "cache", "local")
    model = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "pure")
    out = adversary_search(runner, cfg, model, "t", "e", 400, seed=0)
    reruns = [r for r in out.attacks if r["attack.source"] == "reseed"]
    assert [r["attack_id"] for r in reruns] == [f"{out.best_attack_id}-r1", f"{out.best_attack_id}-r2"]
    assert all(r["attack.steps_run"] == out.best_step for r in reruns)  # stopped at the checkpoint
    chosen = next(r for r in out.attacks if r["attack_id"] == out.best_attack_id)
    assert all(r["attack.lr"] == chosen["attack.lr"] and r["attack.steps"] == chosen["attack.steps"] for r in reruns)
    assert out.flops == pytest.approx(sum(r["flops"] for r in out.attacks))
    assert out.search_flops == pytest.approx(sum(r["flops"] for r in out.attacks if r["attack.source"] == "search"))
    assert len(out.attacked_seeds) == 3 and out.attacked_sd == pytest.approx(np.std(out.attacked_seeds, ddof=1))


def test_archive_transfer_second_models_first_attacks_are_the_first_models_strongest(tmp_path, monkeypatch):
    _spy_scores(monkeypatch, rep_seed=1, sel_seed=5)
    cfg = _cfg(tmp_path, budget=4, prior=0, archive=2, reseeds=0,
               params={"kind": "full", "data": "forget"}, space={"steps": [4, 6], "lr": [1e-4, 1e-2]})
    runner = Runner(tmp_path / "cache", "local")
    ctx = Context(cfg, "e", str(tmp_path / "e"), runner)
    first = pretrained(ctx, "pure")
    second = pretrained(ctx, "reference")
    a = adversary_search(runner, cfg, first, "m1", "e", 400, exp_dir=ctx.exp_dir, seed=0)
    pre = first.result["metrics"]["forget_acc_sel"]
    ranked = sorted((r for r in a.attacks if r["attack.source"] == "search"), key=lambda r: -r["forget_acc_sel_max"])
    params = {r["attack_id"]: t.params for r, t in zip(sorted(a.attacks, key=lambda r: r["seq"]), a.study.trials)}
    expect = [params[r["attack_id"]] for r in ranked if r["forget_acc_sel_max"] > pre][:2]
    assert expect, "the spy gives some attack a positive gain"
    assert informed_start(cfg, ctx.exp_dir, second.key) == expect
    b = adversary_search(runner, cfg, second, "m2", "e", 400, exp_dir=ctx.exp_dir, seed=1)
    assert [t.params for t in b.study.trials[: len(expect)]] == expect
    assert archive.lookup(ctx.exp_dir, second.key)["summary"]["best_attack_id"] == b.best_attack_id
    # a model's own entry never seeds its own search (a resumed trial re-runs the same attacks)
    space = {**cfg.attack.search_space(), **all_family_dims()}  # with a composed family's (``then``) dimensions
    others = [point_in(space, a["params"])
              for a in archive.lookup(ctx.exp_dir, second.key)["attacks"] if a["gain"] > 0]
    assert informed_start(cfg, ctx.exp_dir, first.key) == others[:2]


def test_prior_comes_first_and_follows_the_configured_bounds(tmp_path):
    cfg = _cfg(tmp_path, params={}, space={"lr": [1e-5, 1e-3], "steps": [10, 50]}, prior=3, archive=0)
    first, second, third = informed_start(cfg, None, "k")
    # full at the log middle rate on both data modes, then LoRA r 16 at that rate on the mix,
    # at the longest attack
    assert [p["data"] for p in (first, second, third)] == ["mix", "forget", "mix"]
    assert first["lr"] == second["lr"] == third["lr"] == pytest.approx(1e-4)
    assert first["steps"] == second["steps"] == third["steps"] == 50 and first["kind"] == "full"
    assert not any(k.startswith("lora_") for k in first)  # LoRA's dimensions only for LoRA points
    assert third["kind"] == "lora" and (third["lora_r"], third["lora_alpha"], third["lora_targets"]) == (16, 32.0, "all")
    # a config that fixes the kind keeps the rates and data modes of every point; LoRA's points on
    # the mix become full's at those rates and data, each tried once
    full = _cfg(tmp_path, params={"kind": "full"}, space={"lr": [1e-5, 1e-3], "steps": [10, 50]}, prior=7, archive=0)
    points = informed_start(full, None, "k")
    assert not any("kind" in p or any(k.startswith("lora_") for k in p) for p in points)
    assert [(p["data"], round(math.log10(p["lr"]), 2)) for p in points] == [
        ("mix", -4.0), ("forget", -4.0), ("mix", -3.5), ("mix", -4.5), ("forget", -3.5)]


def test_flops_budget_is_never_exceeded_and_spent_within_one_attack(tmp_path):
    # 0.35 of the reference's 40 × 64 examples: the two prior attacks (6 steps × 64) fit, the
    # next one is cut to what is left
    cfg = _cfg(tmp_path, budget=None, budget_flops=0.35, reseeds=0)
    runner = Runner(tmp_path / "cache", "local")
    model = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "pure")
    ref_flops = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "reference").result["flops"]
    out = adversary_search(runner, cfg, model, "t", "e", 400, seed=0, ref_flops=ref_flops)
    limit = 0.35 * ref_flops
    last = max(out.attacks, key=lambda r: r["seq"])
    per_step = last["flops"] / max(1, last["attack.steps_run"])
    assert limit - per_step * last["attack.steps"] < out.search_flops <= limit  # the last attack was cut to fit
    assert last["attack.steps_run"] < last["attack.steps"]
    assert len(out.study.trials) == len(out.attacks) < 100_000
    n = model.result["n_params"]  # FLOPs count only the steps run (6·N·tokens)
    assert all(r["flops"] == 6 * n * r["attack.steps_run"] * r["attack.batch"] * 11 for r in out.attacks)
    with pytest.raises(ValueError, match="ref_flops"):
        adversary_search(runner, cfg, model, "t", "e", 400, seed=0)


def test_asha_rule_keeps_the_top_third_at_each_rung(tiny_cfg):
    cfg = tiny_cfg.model_copy(update={"attack": config.AttackConfig(families=["finetune"],
        pruner="asha", prune_startup=2, prune_warmup=10, reduction_factor=3, loop=LoopConfig(eval_every=10))})
    study = optuna.create_study(direction="maximize")
    curves = [{0: 0.0, 10: 0.1, 20: 0.2, 30: 0.3, 40: 0.3, 90: 0.35},
              {0: 0.0, 10: 0.5, 20: 0.4, 30: 0.6, 40: 0.6, 90: 0.7},
              {0: 0.0, 10: 0.3}]  # pruned at its first rung
    states = [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    for curve, state in zip(curves, states):
        study.add_trial(optuna.trial.create_trial(
            state=state, value=max(curve.values()) if state == optuna.trial.TrialState.COMPLETE else None,
            intermediate_values=curve, params={}, distributions={}))
    rule = prune_rule(cfg, study)
    # rungs at 10, 30, 90 steps; best-so-far there: {0.5, 0.3, 0.1}, {0.6, 0.3}, {0.7, 0.35}
    # with n + 1 competitors the attack must reach the (⌊(n+1)/3⌋)-th best: 1st of 3 → 0.5, ...
    assert rule == {"warmup": 10, "below": {"10": 0.5, "30": 0.6, "90": 0.7}}
    stop, _ = attack.pruning_rule(rule)
    # steps 0 (warm-up), 10 (0.55 ≥ 0.5), 20 (no rung), 30 (best 0.55 < 0.6: stop)
    assert [stop({"forget_acc_sel": v}, s) for v, s in ((0.0, 0), (0.55, 10), (0.5, 20), (0.5, 30))] == [False, False, False, True]


def test_under_attacked_flag_against_the_pure_interval():
    rows = [
        {"trial_id": "pure", "kind": "baseline", "method": "pure", "status": "ok",
         "forget_acc_attacked": 0.25, "forget_acc_attacked_lo": 0.19},
        {"trial_id": "a", "kind": "defender", "method": "graddiff", "status": "ok", "forget_acc_attacked": 0.10},
        {"trial_id": "b", "kind": "defender", "method": "graddiff", "status": "ok", "forget_acc_attacked": 0.20},
        {"trial_id": "c", "kind": "defender", "method": "graddiff", "status": "error", "forget_acc_attacked": None},
    ]
    out = {r["trial_id"]: r.get("under_attacked") for r in tables.flag_under_attacked(rows)}
    assert out == {"pure": None, "a": True, "b": False, "c": None}


def test_a_budget_cut_attack_chosen_as_the_strongest_is_rerun_under_the_same_cut(tmp_path, monkeypatch):
    """The FLOPs budget cut the last attack at an odd step (3 of 5, evaluated every 2): its
    checkpoint at the cut is chosen; the re-run trains the same cut schedule and is scored
    there (it once ran on to step 4, had no figure at step 3, and the verification failed)."""
    from search import adversary

    cfg = _cfg(tmp_path, budget=None, budget_flops=0.35, reseeds=1)  # two prior attacks, then 3 steps fit
    runner = Runner(tmp_path / "cache", "local")
    model = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "pure")
    ref_flops = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "reference").result["flops"]

    def the_cut_one(rows):
        cut = max((r for r in rows if r["attack.source"] != "reseed"), key=lambda r: r["seq"])
        return {**cut, "best_step": cut["attack.steps_run"]}

    monkeypatch.setattr(adversary, "choose", the_cut_one)
    out = adversary_search(runner, cfg, model, "t", "e", 400, seed=0, ref_flops=ref_flops)
    chosen = next(r for r in out.attacks if r["attack_id"] == out.best_attack_id)
    assert chosen["attack.steps_run"] == out.best_step == 3 < chosen["attack.steps"]
    rerun = next(r for r in out.attacks if r["attack.source"] == "reseed")
    assert rerun["attack.steps_run"] == 3 and len(out.attacked_seeds) == 2
