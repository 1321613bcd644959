"""The attack suite: LoRA adapters, every optimizer and schedule, data modes and the disjointness
of attack data from scoring data, batteries, and the adversary search's bookkeeping."""

import math

import pytest
import torch

from search import config, tables
from search.adversary import adversary_search, attack_spec
from search.runner import Runner, run_stage
from search.trial import Context, pretrained
from spaces import BATTERIES
from spaces.batteries.undo_relearn import UNDO_LRS
from trainables.settings import arithmetic as A
from trainables import attack, data, lora, loop, models


def _model(arch="gpt2"):
    cfg = models.ModelConfig(arch=arch, d_model=16, n_layer=2, n_head=2)
    return models.build_model(cfg, len(A.VOCAB), A.SEQ_LEN)


@pytest.mark.parametrize("arch,targets,expect", [
    ("gpt2", "attn", {"transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"}),
    ("gpt2", "mlp", {"transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"}),
    ("llama", "attn", {f"model.layers.0.self_attn.{p}_proj" for p in "qkvo"}),
    ("llama", "mlp", {f"model.layers.0.mlp.{p}_proj" for p in ("gate", "up", "down")}),
])
def test_lora_targets_found_by_module_path(arch, targets, expect):
    names = set(lora.target_modules(_model(arch), targets))
    assert {n for n in names if ".0." in n} == expect
    assert not any("lm_head" in n or "wte" in n or "embed" in n for n in names)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lora_attack_changes_only_adapter_weights(arch):
    model = lora.add_lora(_model(arch), r=4, alpha=8.0, dropout=0.0, targets="all")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = A.build(A.Config())
    gen = torch.Generator().manual_seed(0)

    def loss_fn(net, step):
        batch = data.draw(d.forget_T, 16, gen)
        return A.answer_loss(net(input_ids=batch).logits, batch)

    loop.train(model, loss_fn, loop.LoopConfig(steps=5, lr=1e-2, weight_decay=0.1))  # decay on
    after = model.state_dict()
    adapters = [k for k in after if "lora_" in k]
    assert adapters and all(not torch.equal(before[k], after[k]) for k in adapters if "lora_B" in k)
    assert all(torch.equal(before[k], after[k]) for k in after if "lora_" not in k)  # base bit-identical


@pytest.mark.parametrize("optimizer", list(loop.OPTIMIZERS))
@pytest.mark.parametrize("schedule", loop.SCHEDULES)
def test_every_optimizer_and_schedule_trains(optimizer, schedule):
    w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    model = torch.nn.Module()
    model.w = w
    cfg = loop.LoopConfig(steps=30, lr=0.1, optimizer=optimizer, schedule=schedule, warmup_steps=3)
    loop.train(model, lambda m, s: (m.w ** 2).sum(), cfg)
    assert (w ** 2).sum().item() < 13.0


def test_schedule_factors():
    assert loop.lr_factor("cosine", 0, 100, 10) == 1.0  # no warmup in plain cosine
    assert loop.lr_factor("cosine", 50, 100, 10) == pytest.approx(0.5)
    assert loop.lr_factor("warmup_cosine", 0, 100, 10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(0)))


@pytest.mark.parametrize("kind", attack.DATA)
def test_attack_data_never_contains_the_scoring_facts(kind, tiny_cfg, tmp_path, monkeypatch):
    runner = Runner(tmp_path / "cache", "local")
    ref = pretrained(Context(tiny_cfg, "e", str(tmp_path / "e"), runner), "pure")
    seen = []
    real_draw = data.draw

    def spy(tokens, n, gen):
        batch = real_draw(tokens, n, gen)
        seen.append(batch)
        return batch

    monkeypatch.setattr(data, "draw", spy)
    spec = attack_spec(tiny_cfg, {"lr": 1e-3, "steps": 6, "data": kind, "n_examples": 50}, 0)
    out = run_stage(runner, "attack", spec, {"model": ref})
    d = A.build(tiny_cfg.setting)
    V = {tuple(r.tolist()) for r in d.forget_V}
    T50 = {tuple(r.tolist()) for r in attack.examples(d.forget_T, 50, 0)}
    rows = {tuple(r.tolist()) for b in seen for r in b}
    assert seen and not rows & V  # scored on V, never trained on it
    forget_rows = {r for r in rows if A.op_of(torch.tensor([r]))[0] in A.FORGET_OPS}
    assert forget_rows <= T50 and out.result["n_examples"] == 50
    assert bool(forget_rows) == (kind != "benign")


def test_batch_sources_and_examples():
    assert [attack.batch_source("retain_forget", s, 10) for s in range(10)] == ["retain"] * 4 + ["forget"] * 6
    assert attack.batch_source("benign", 3, 10) == "retain" and attack.batch_source("mix", 0, 10) == "mix"
    T = torch.arange(40).reshape(20, 2)
    assert torch.equal(attack.examples(T, None, 0), T) and torch.equal(attack.examples(T, 99, 0), T)
    sub = attack.examples(T, 5, 3)
    assert len(sub) == 5 and torch.equal(sub, attack.examples(T, 5, 3))


def test_batteries_are_the_papers_grids():
    # UNDO's relearning (the authors' run_relearn_*.py): 500 steps, 1 warm-up step, AdamW,
    # a 50/50 forget/retain mix; per setting its rates, batch and evaluation steps
    arith = BATTERIES["undo_relearn"](None, "arithmetic")
    assert [p["lr"] for p in arith] == [1e-3, 7e-4, 4e-4, 1e-4, 7e-5, 5e-5, 1e-5, 7e-6, 4e-6, 1e-6] == list(UNDO_LRS)
    assert {(p["optimizer"], p["steps"], p["warmup_steps"], p["data"], p["retain_fraction"], p["batch_size"],
             p["eval_every"]) for p in arith} == {("adamw", 500, 1, "mix", 0.5, 15, 5)}
    wmdp = BATTERIES["undo_relearn"](None, "wmdp")
    assert [p["lr"] for p in wmdp] == [2.15e-5, 1e-5, 4.62e-6]
    assert {(p["steps"], p["batch_size"], tuple(p["eval_at"]), p["data"]) for p in wmdp} == {
        (500, 20, (10, 25, 50, 150, 500), "mix")}
    short = BATTERIES["undo_relearn"](100, "wmdp")
    assert {(p["steps"], tuple(p["eval_at"])) for p in short} == {(100, (10, 25, 50))}  # the end is always evaluated
    red = BATTERIES["tar_red_team"](50, "arithmetic")
    assert len(red) == 48 and {p["kind"] for p in red} == {"full", "lora"} and {p["steps"] for p in red} == {50}
    # TAR's adversary rates on real models; × 50 on arithmetic (its models pre-train at 3e-3)
    real = BATTERIES["tar_red_team"](None, "wmdp")
    assert sorted({p["lr"] for p in real}) == [2e-6, 2e-5, 4e-5] and {p["steps"] for p in real} == {1000}
    assert sorted({p["lr"] for p in BATTERIES["tar_red_team"](None, "arithmetic")}) == [1e-4, 1e-3, 2e-3]
    assert {p["data"] for p in red} == {"forget", "retain_forget"} and {p["optimizer"] for p in red} == {"adamw", "sgd_nesterov"}


def test_che_and_qi_batteries_are_the_papers_rows_with_arithmetic_rates_scaled():
    # Che et al. 2025, results_config.py: "<data>_<lora-16-32|full>_lr-<lr>_batch-<b>_num-<n>_epoch-<e>"
    rows = ["bio-remove-dataset_lora-16-32_lr-5e-05_batch-8_num-400_epoch-1",
            "bio-remove-dataset_lora-16-32_lr-5e-05_batch-64_num-400_epoch-1",
            "bio-retain-corpus_lora-16-32_lr-5e-05_batch-8_num-400_epoch-1",
            "bio-remove-dataset_lora-16-32_lr-1e-04_batch-8_num-64_epoch-2",
            "bio-retain-corpus_lora-16-32_lr-1e-04_batch-8_num-64_epoch-2",
            "bio-remove-dataset_full_lr-2e-05_batch-16_num-400_epoch-1",
            "bio-remove-dataset_full_lr-2e-05_batch-8_num-64_epoch-2",
            "bio-retain-corpus_full_lr-5e-05_batch-64_num-64_epoch-2",
            "bio-retain-corpus_full_lr-5e-05_batch-64_num-64_epoch-1",
            "wikitext_lora-16-32_lr-5e-05_batch-8_num-400_epoch-1"]
    data = {"bio-remove-dataset": "forget", "bio-retain-corpus": "benign", "wikitext": "benign"}
    for setting, scale in (("wmdp", 1), ("arithmetic", 50)):
        got = BATTERIES["che_tampering"](None, setting)
        assert len(got) == len(rows)
        for p, name in zip(got, rows):
            source, kind, lr, batch, num, epoch = name.replace("_lora-16-32", "_lora").split("_")
            lr, batch, num, epoch = float(lr[3:]), int(batch[6:]), int(num[4:]), int(epoch[6:])
            assert (p["data"], p["kind"], p["batch_size"], p["n_examples"]) == (data[source], kind, batch, num)
            assert p["lr"] == pytest.approx(lr * scale) and p["steps"] == math.ceil(num / batch) * epoch
            assert (p.get("lora_r"), p.get("lora_alpha")) == ((16, 32.0) if kind == "lora" else (None, None))
    # Qi et al. 2024: full AdamW 2e-5, 100 warm-up then cosine, 1,000 steps, batch 64; LoRA r 16 α 32 constant on retain
    full, lora_row = BATTERIES["qi_durability"](None, "wmdp")
    assert (full["lr"], full["steps"], full["warmup_steps"], full["schedule"], full["batch_size"], full["data"]) == (
        2e-5, 1000, 100, "warmup_cosine", 64, "forget")
    assert (lora_row["kind"], lora_row["lora_r"], lora_row["lora_alpha"], lora_row["schedule"], lora_row["data"]) == (
        "lora", 16, 32.0, "constant", "benign")
    full, _ = BATTERIES["qi_durability"](None, "arithmetic")
    assert (full["lr"], full["steps"], full["warmup_steps"]) == (pytest.approx(1e-3), 100, 10)


def test_a_battery_point_reaches_the_attack_stage(tiny_cfg):
    spec = attack_spec(tiny_cfg, BATTERIES["undo_relearn"](None, "wmdp")[0], 0)
    assert spec.loop.eval_at == [10, 25, 50, 150, 500] and spec.loop.batch_size == 20
    assert spec.data == "mix" and spec.retain_fraction == 0.5 and spec.loop.warmup_steps == 1
    che = attack_spec(tiny_cfg, BATTERIES["che_tampering"](None, "arithmetic")[0], 0)
    assert che.lora["r"] == 16 and che.loop.batch_size == 8 and che.n_examples == 400 and che.loop.steps == 50


def test_search_and_battery_maximum_and_the_studys_best(tiny_cfg, tmp_path):
    cfg = tiny_cfg.model_copy(update={"attack": config.AttackConfig(families=["finetune"],
        budget=3, params={}, batteries=["undo_relearn"], battery_steps=4,
        loop=loop.LoopConfig(eval_every=2), space={"steps": [3, 6]})})
    runner = Runner(tmp_path / "cache", "local")
    ref = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "pure")
    out = adversary_search(runner, cfg, ref, "t", "e", 400)
    ok = [a for a in out.attacks if a["status"] == "ok" and a["attack.source"] != "reseed"]
    assert len(out.attacks) == 15 and {a["attack.source"] for a in out.attacks} == {"undo_relearn", "search", "reseed"}
    assert out.attacked_sel == max(a["forget_acc_sel_max"] for a in ok)  # chosen on V_sel over everything
    assert out.best_attack_id == min((-a["forget_acc_sel_max"], a["seq"], a["attack_id"]) for a in ok)[2]
    search_rows = [a for a in ok if a["attack.source"] == "search"]
    assert out.study.best_value == max(a["forget_acc_sel_max"] for a in search_rows)
    assert len(out.study.trials) == 3


@pytest.mark.parametrize("override,field", [
    ("attack.params.kind=qlora", "params.kind"),
    ("attack.params.lr=-1", "params.lr"),
    ("attack.params.steps=2.5", "params.steps"),
    ("attack.params.momentum=0.9", "params.momentum"),
    ("attack.batteries=[red_team]", "batteries"),
    ("attack.budget=0", "budget"),
    ("attack.space.lora_r=[32, 2]", "space.lora_r"),
])
def test_bad_attack_config_names_the_field(override, field):
    with pytest.raises(config.ConfigError, match=field.replace(".", r"\.")):
        config.load(None, [override])


def test_pruning_rule_stops_at_the_first_step_below_the_median():
    rule, why = attack.pruning_rule({"warmup": 10, "below": {"0": 0.9, "10": 0.5, "20": 0.6}})
    assert rule({"forget_acc_sel": 0.1}, 0) is False  # step 0: inside the warmup
    assert rule({"forget_acc_sel": 0.55}, 10) is False  # step 10: best 0.55 ≥ 0.5
    assert rule({"forget_acc_sel": 0.3}, 20) is True  # step 20: best so far 0.55 < 0.6
    assert why == {"stopped": "pruned"}
    assert attack.pruning_rule(None)[0] is None
    rule, why = attack.pruning_rule(None, stop_at=25)
    assert rule({"forget_acc_sel": 0.0}, 25) is True and why == {"stopped": "stop_at"}


def test_past_peak_rule_stops_an_attack_that_overshot_its_best():
    """k evaluations without a new best AND the latest d below the best: a curve still
    climbing slowly, or level at its best, goes on; one that fell from its peak stops."""
    def run(values, evals=3, drop=0.05):
        rule, why = attack.pruning_rule(None, past_peak={"evals": evals, "drop": drop})
        for i, v in enumerate(values):
            if rule({"forget_acc_sel": v}, 20 * i):
                return 20 * i, why["stopped"]
        return None, None

    assert run([0.6, 0.8, 0.75, 0.72, 0.7, 0.69]) == (80, "past_peak")  # the quick front's barely-unlearned curve
    assert run([0.6, 0.8, 0.79, 0.78, 0.77, 0.76]) == (None, None)  # 3 without a best, but within 0.05
    assert run([0.1, 0.2, 0.15, 0.14, 0.25, 0.1, 0.1, 0.1]) == (140, "past_peak")  # a new best resets the count
    assert run([0.3, 0.3, 0.3, 0.3, 0.3]) == (None, None)  # level: never below the best


def test_prune_rule_is_the_median_of_completed_attacks(tiny_cfg):
    from search.adversary import prune_rule

    cfg = tiny_cfg.model_copy(update={"attack": config.AttackConfig(families=["finetune"], pruner="median", prune_startup=3, prune_warmup=10)})
    study = __import__("optuna").create_study(direction="maximize")
    dist = {}
    for curve in ({0: 0.0, 10: 0.2, 20: 0.4}, {0: 0.0, 10: 0.6, 20: 0.8}):
        study.add_trial(__import__("optuna").trial.create_trial(value=max(curve.values()), intermediate_values=curve, params={}, distributions=dist))
    assert prune_rule(cfg, study) is None  # fewer than prune_startup completed
    study.add_trial(__import__("optuna").trial.create_trial(value=0.5, intermediate_values={0: 0.1, 10: 0.3, 20: 0.5}, params={}, distributions=dist))
    assert prune_rule(cfg, study) == {"warmup": 10, "below": {"10": 0.3, "20": 0.5}}


def test_pruned_attacks_are_recorded_as_pruned_not_lost(tiny_cfg, tmp_path, monkeypatch):
    import optuna

    from search import adversary

    cfg = tiny_cfg.model_copy(update={"attack": config.AttackConfig(families=["finetune"],
        budget=4, params={"kind": "full", "data": "forget"}, loop=loop.LoopConfig(eval_every=2),
        space={"steps": [8, 10]}, pruner="median", prune_startup=2, prune_warmup=4)})
    rule = adversary.prune_rule
    # tiny models score ~0 everywhere, so nothing falls below the real median: raise it to 1
    monkeypatch.setattr(adversary, "prune_rule", lambda c, s: rule(c, s) and {**rule(c, s), "below": {"4": 1.0, "6": 1.0}})
    runner = Runner(tmp_path / "cache", "local")
    ref = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "pure")
    out = adversary_search(runner, cfg, ref, "t", "e", 400)
    states = [t.state for t in out.study.trials]
    assert states[:2] == [optuna.trial.TrialState.COMPLETE] * 2 and set(states[2:]) == {optuna.trial.TrialState.PRUNED}
    rows = {a["attack_id"]: a for a in out.attacks if a["attack.source"] == "search"}
    assert len(rows) == 4 and [rows[f"t-a{i}"]["status"] for i in range(4)] == ["ok", "ok", "pruned", "pruned"]
    assert all(rows[f"t-a{i}"]["attack.steps_run"] == 4 for i in (2, 3))  # stopped at the warmup's end
    assert {c["attack_id"] for c in out.curves} >= set(rows)  # their curves are kept too
    n = ref.result["n_params"]
    assert rows["t-a2"]["flops"] == 6 * n * 4 * rows["t-a2"]["attack.batch"] * A.SEQ_LEN  # only the steps run


def test_lora_init_is_seeded_and_concurrent_attacks_all_land(tiny_cfg, tmp_path):
    a = lora.add_lora(_model(), r=4, alpha=8.0, dropout=0.0, targets="all", seed=5).state_dict()
    b = lora.add_lora(_model(), r=4, alpha=8.0, dropout=0.0, targets="all", seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = tiny_cfg.model_copy(update={"attack": config.AttackConfig(families=["finetune"],
        budget=4, concurrency=2, params={"kind": "lora"}, loop=loop.LoopConfig(eval_every=2), space={"steps": [3, 5]})})
    runner = Runner(tmp_path / "cache", "local")
    ref = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "pure")
    out = adversary_search(runner, cfg, ref, "t", "e", 400)
    searched = [x for x in out.attacks if x["attack.source"] == "search"]
    assert sorted(x["attack_id"] for x in searched) == [f"t-a{i}" for i in range(4)]
    assert all(x["status"] == "ok" and x["attack.kind"] == "lora" for x in out.attacks)


def test_trial_attacked_score_is_the_maximum_over_search_and_battery_in_the_tables(tmp_path):
    import pyarrow.parquet as pq

    from search.trial import defender
    from tests.conftest import TINY

    cfg = config.load(None, [*TINY, f"cache_dir={tmp_path / 'cache'}", "attack.params={}", "attack.budget=3",
                             "attack.batteries=[undo_relearn]", "attack.battery_steps=3", "defender.params.steps=3"])
    ctx = Context(cfg, "e", str(tmp_path / "e"), Runner(tmp_path / "cache", "local"))
    row = defender(ctx, "t1", {"lam": 1.0, "lr": 1e-3}, pretrained(ctx, "reference"))
    tables.write_tables(ctx.exp_dir, tables.read_parts(ctx.exp_dir))
    attacks = pq.read_table(tmp_path / "e" / tables.ATTACKS).to_pylist()  # a second reader
    ran = [a for a in attacks if a["status"] in ("ok", "pruned") and a["attack.source"] != "reseed"]
    assert {a["attack.source"] for a in attacks} == {"search", "undo_relearn", "reseed"} and len(attacks) == 14
    best = min(ran, key=lambda a: (-a["forget_acc_sel_max"], a["seq"]))
    assert row["best_attack_id"] == best["attack_id"] and row["attacks_run"] == 14  # 10 + 3 + 1 re-run
    assert row["forget_acc_attacked_sel"] == best["forget_acc_sel_max"]
    seeds = [best["forget_acc_rep_at_best"]] + [
        c["value"] for c in pq.read_table(tmp_path / "e" / tables.CURVES).to_pylist()
        if c["attack_id"] == f"{best['attack_id']}-r1"
        and c["metric"] == "forget_acc_rep" and c["step"] == best["best_step"]]
    assert len(seeds) == 2 and row["forget_acc_attacked"] == pytest.approx(sum(seeds) / 2)
    assert row["forget_acc_attacked_lo"] <= row["forget_acc_attacked"] <= row["forget_acc_attacked_hi"]


def test_the_then_choices_are_the_families_that_say_they_follow_a_fine_tune():
    """``then`` is not a list to keep in step: a family's space declares ``AFTER_FINETUNE`` and
    joins the fine-tune's choices in its declared order; each such family trains nothing, changes
    the model it is handed (no context before the question) and has the ``applied`` transform
    that the fine-tune's scorer runs."""
    from spaces import ATTACK_SPACE
    from spaces.attacks import THEN
    from trainables.families import FAMILIES

    assert ATTACK_SPACE["then"].values == ("none", *THEN) == ("none", "quantize", "prune", "ablate")
    for name in THEN:
        family = FAMILIES[name]
        assert getattr(family, "TRAINING_FREE", False) and not getattr(family, "CONTEXT", False), name
        assert callable(family.applied), name
