"""``search/run.py --plan``: the stages a config will run, counted from the config, and their
compute as the tables count it; cached stages recognised; nothing started or written."""

from __future__ import annotations

import pytest

from search import config, plan
from search.runner import Runner, run_stage
from search.trial import pretrain_spec
from tests.conftest import TINY


def _cfg(tmp_path, *extra):
    return config.load(None, [*TINY, f"cache_dir={tmp_path / 'cache'}", f"storage={tmp_path / 'results'}", *extra])


def test_the_plan_counts_every_stage_and_prints_without_writing(tmp_path, capsys):
    from search.run import main

    cfg = _cfg(tmp_path)
    rows = {r.stage: r for r in plan.rows(cfg, plan.n_params(cfg), cfg.cache_dir)}
    models = 2 + cfg.search.trials  # the pure and reference baselines, and each defender
    assert rows["unlearn graddiff"].runs == cfg.search.trials
    searched = [r for name, r in rows.items() if name.startswith("attack (searched")]
    assert sum(r.runs for r in searched) == models * cfg.attack.budget
    assert rows["attack (searched, prior point)"].runs == models * cfg.attack.prior  # the prior, at full length
    assert rows["attack (searched, prior point)"].steps == 10
    assert rows["attack (re-runs of the strongest)"].runs == models * cfg.attack.reseeds
    assert rows["pretrain reference"].steps == 40 and rows["pretrain reference"].cached == "no"
    # a searched dimension at the middle of its (log) range: steps [5, 10] → 7
    assert rows["unlearn graddiff"].steps == 7 and rows["attack (searched, typical point)"].steps == 7

    code = main(["--plan", *[a for o in TINY for a in ("--set", o)], "--set", f"cache_dir={tmp_path / 'cache'}",
                 "--storage", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 0 and "| pretrain reference | 1 | 40 |" in out and "CPU time: about" in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()  # nothing written


def test_cached_stages_are_recognised_and_flops_match_the_stages(tmp_path):
    cfg = _cfg(tmp_path)
    ref = run_stage(Runner(tmp_path / "cache", "local"), "pretrain", pretrain_spec(cfg, "reference"))
    rows = {r.stage: r for r in plan.rows(cfg, plan.n_params(cfg), cfg.cache_dir)}
    assert rows["pretrain reference"].cached == "yes" and rows["pretrain pure"].cached == "no"
    assert rows["pretrain reference"].n_params == ref.result["n_params"]
    # training FLOPs as the stage counts them (evaluations are the forward passes on top)
    assert rows["pretrain reference"].flops(eval_tokens=0) == pytest.approx(ref.result["flops"])


@pytest.mark.parametrize("loop", [{"steps": 63, "eval_every": 20}, {"steps": 60, "eval_every": 20},
                                  {"steps": 60, "eval_every": 7, "eval_at": [10, 25, 50]}, {"steps": 30, "eval_every": 0}])
def test_evaluations_are_what_the_loop_does(loop):
    import torch

    from trainables import loop as L

    model = torch.nn.Linear(2, 1)
    curve, _ = L.train(model, lambda net, step: net(torch.ones(1, 2)).pow(2).sum(), L.LoopConfig(lr=0.01, **loop),
                       eval_fn=lambda m: {"x": 1.0})
    assert plan.evaluations(L.LoopConfig(**loop)) == len({s for s, k, _ in curve if k == "x"})


def test_a_real_model_plan_gives_gpu_hours_from_its_size(wmdp_paths, tmp_path):
    import json

    from tests import wmdp_fixtures as F

    path = tmp_path / "w.yaml"
    path.write_text(json.dumps({
        "setting": F.setting(wmdp_paths), "model": {"pretrained": str(wmdp_paths["llama"]), "pretrain_tokens": 1e6},
        "defender": {"method": "rmu", "params": {"lr": 1e-3, "steps": 3, "layer": 1}},
        "attack": {"budget": 2, "loop": {"batch_size": 4, "eval_every": 2}, "batteries": ["undo_relearn"]},
        "cache_dir": str(tmp_path / "cache"), "storage": str(tmp_path / "results"),
    }))
    cfg = config.load(path)
    out = plan.text(cfg)
    rows = {r.stage: r for r in plan.rows(cfg, plan.n_params(cfg))}
    assert rows["attack (undo_relearn)"].runs == 3 * (1 + cfg.search.trials)  # no pure model given
    assert rows["attack (undo_relearn)"].steps == 500 and rows["attack (undo_relearn)"].evals == 6
    assert "GPU time: about" in out and "evaluate reference" in out and "evaluate pure" not in out


def test_a_method_on_a_safeguard_plans_the_safeguard_once_and_the_method_per_trial(tmp_path):
    cfg = _cfg(tmp_path, "defender.method=lat", "defender.safeguard={method: rmu, params: {steps: 7}}")
    rows = {r.stage: r for r in plan.rows(cfg, plan.n_params(cfg), cfg.cache_dir)}
    assert rows["unlearn rmu"].runs == 1 and rows["unlearn rmu"].steps == 7  # nothing searched reaches it
    assert rows["unlearn.lat (on rmu)"].runs == cfg.search.trials
    models = 2 + cfg.search.trials + 1  # the baselines, each defender, and the safeguard
    prior = rows["attack (searched, prior point)"]
    assert prior.runs == models * cfg.attack.prior
