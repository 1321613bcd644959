"""UNDO: corruption against its formula, the distillation loss against KL by hand, the distill
stage's early stop and FLOPs, and an UNDO trial's row."""

import math

import pytest
import torch

from search import config, tables
from search.runner import Runner, run_stage
from search.trial import Context, baseline, defender, common_spec, pretrained, suppress
from search.defender_config import resolve
from trainables.settings import arithmetic as A
from trainables import loop, models, undo


def _model(seed: int = 0):
    return models.build_model(models.ModelConfig(d_model=16, n_layer=1, n_head=2, init_seed=seed), len(A.VOCAB), A.SEQ_LEN)


def test_corrupt_matches_the_formula_for_a_seeded_draw():
    model, before = _model(), None
    before = {k: v.clone() for k, v in model.named_parameters()}
    alpha, beta, seed = 0.3, 0.5, 7
    undo.corrupt(model, alpha, beta, seed)
    gen = torch.Generator().manual_seed(seed)  # the documented draw order: named_parameters()
    n2d = 0
    for name, p in model.named_parameters():
        if before[name].dim() == 2:
            noise = torch.nn.init.xavier_uniform_(torch.empty(p.shape), generator=gen)
            expect = (1 - alpha) * before[name] + alpha * beta * noise
            n2d += 1
        else:
            expect = (1 - alpha) * before[name]
        torch.testing.assert_close(p.detach(), expect, rtol=0, atol=1e-7)
    assert n2d >= 4  # embeddings, attention and MLP matrices were all noised


def test_corrupt_alpha_0_is_identity_and_alpha_1_beta_0_zeroes():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    undo.corrupt(model, 0.0, 0.7, 1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # bit-identical
    undo.corrupt(model, 1.0, 0.0, 1)
    assert all(torch.count_nonzero(p) == 0 for p in model.parameters())


@pytest.mark.parametrize("alpha,beta", [(-0.1, 0.1), (1.5, 0.1), (0.5, -1.0), (0.5, 2.0)])
def test_corrupt_rejects_bad_strength(alpha, beta):
    with pytest.raises(ValueError, match="alpha|beta"):
        undo.corrupt(_model(), alpha, beta, 0)


@pytest.mark.parametrize("override,field", [
    ("defender.undo.params.alpha=1.2", "params.alpha"),
    ("defender.undo.params.beta=-0.1", "params.beta"),
    ("defender.undo.space.alpha=[0.0, 2.0]", "space.alpha"),
    ("defender.undo.init=noise", "init"),
    ("defender.undo.params.gamma=1", "params.gamma"),
])
def test_bad_undo_config_names_the_field(override, field):
    with pytest.raises(config.ConfigError, match=field.replace(".", r"\.")):
        config.load(None, [override])


def _kl_by_hand(s_logits, t_logits, T):
    total = 0.0
    rows = s_logits.reshape(-1, s_logits.shape[-1]).tolist(), t_logits.reshape(-1, t_logits.shape[-1]).tolist()
    for s, t in zip(*rows):
        zs = sum(math.exp(x / T) for x in s)
        zt = sum(math.exp(x / T) for x in t)
        for a, b in zip(s, t):
            pt, ps = math.exp(b / T) / zt, math.exp(a / T) / zs
            total += pt * (math.log(pt) - math.log(ps))
    return total / len(rows[0]) * T * T


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_distill_loss_is_forward_kl(T):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    assert undo.distill_loss(s, t, temperature=T).item() == pytest.approx(_kl_by_hand(s, t, T), rel=1e-5)
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]], dtype=torch.bool)
    want = _kl_by_hand(s[mask][None], t[mask][None], T)
    assert undo.distill_loss(s, t, mask, temperature=T).item() == pytest.approx(want, rel=1e-5)
    assert undo.distill_loss(t, t, temperature=T).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_decreases_on_a_short_run():
    teacher, studentm = _model(0).eval(), _model(1)
    d = A.build(A.Config())
    gen = torch.Generator().manual_seed(0)

    def loss_fn(net, step):
        batch = d.retain_train[torch.randint(len(d.retain_train), (32,), generator=gen)]
        with torch.no_grad():
            t = A.answer_logits(teacher(input_ids=batch).logits)
        return undo.distill_loss(A.answer_logits(net(input_ids=batch).logits), t)

    curve, _ = loop.train(studentm, loss_fn, loop.LoopConfig(steps=60, lr=3e-3, batch_size=32))
    losses = [v for _, k, v in curve if k == "loss"]
    assert losses[-1] < 0.5 * losses[0]


@pytest.fixture
def undo_cfg(tmp_path):
    from tests.conftest import TINY

    return config.load(None, [
        *TINY, f"cache_dir={tmp_path / 'cache'}", f"storage={tmp_path / 'results'}",
        "defender.params.steps=5", "defender.params.lr=1e-3",
        "defender.undo.params.beta=0.1", "defender.undo.params.lr=3e-3",
        "defender.undo.loop.eval_every=5", "defender.undo.params.steps=20",
    ])


def test_distill_stage_stops_early_and_counts_flops(undo_cfg, tmp_path):
    ctx = Context(undo_cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference = pretrained(ctx, "reference")
    teacher = suppress(ctx, "graddiff", {"lam": 1.0}, reference)
    # α = 0: the student is the teacher, within ε at step 0, so no step is taken
    same = run_stage(ctx.runner, "distill", undo_cfg.defender.undo.spec(common_spec(undo_cfg), {"alpha": 0.0}), {"teacher": teacher})
    assert same.result["steps"] == 0 and same.result["flops"] == 0
    # a tiny teacher scores ~0, so the target is met early; with ε < 0 impossible, it is never
    # met and the student trains to the budget
    cfg = undo_cfg.model_copy(deep=True)
    spec = cfg.defender.undo.spec(common_spec(cfg), {"alpha": 0.9}).model_copy(update={"epsilon": -1.0})
    out = run_stage(ctx.runner, "distill", spec, {"teacher": teacher})
    steps, n = out.result["steps"], out.result["n_params"]
    assert steps == 20 and out.result["metrics"]["retain_acc"] == [
        v for s, k, v in out.result["curve"] if k == "retain_acc" and s == 20][0]
    tokens = steps * 64 * A.SEQ_LEN
    assert out.result["flops"] == 6 * n * tokens + 2 * n * tokens  # student trains, teacher forwards


def test_undo_trial_and_suppressed_baseline_rows(undo_cfg, tmp_path):
    undo_cfg.defender.undo.epsilon = -1.0  # a tiny teacher scores ~0: make the student train
    ctx = Context(undo_cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference, pure = pretrained(ctx, "reference"), pretrained(ctx, "pure")
    sup = baseline(ctx, "suppressed", reference, method="graddiff")
    pure_row = baseline(ctx, "pure", reference, pure)
    point = {"lam": 5.0, "undo.alpha": 0.5}
    resolved = resolve(undo_cfg.defender, common_spec(undo_cfg), point)
    assert resolved.method == "graddiff" and resolved.values == point
    assert resolved.steps[0].spec.params["lam"] == 5.0 and resolved.steps[1].spec.alpha == 0.5
    row = defender(ctx, "t1", point, reference)
    # the trial distilled the suppressed baseline's teacher and found its attacks in the cache
    assert row["suppressed_key"] == sup["model_key"]
    assert row["forget_acc_attacked_suppressed"] == sup["forget_acc_attacked"]
    assert row["steps.distill"] == 20 and row["param.undo.alpha"] == 0.5
    assert row["flops.distill"] == 8 * reference.result["n_params"] * 20 * 64 * A.SEQ_LEN
    assert row["compute_frac"] == pytest.approx((row["flops.unlearn"] + row["flops.distill"]) / reference.result["flops"])
    t = tables.write_tables(ctx.exp_dir, tables.read_parts(ctx.exp_dir))["trials.parquet"].to_pylist()
    by_id = {r["trial_id"]: r for r in t}
    s, p, a = sup["forget_acc_attacked"], pure_row["forget_acc_attacked"], row["forget_acc_attacked"]
    assert by_id["t1"]["robustness"] == (pytest.approx((s - a) / (s - p)) if s != p else None)
    assert by_id["suppressed"]["robustness"] == (0.0 if s != p else None)
    assert by_id["pure"]["robustness"] == (1.0 if s != p else None)
    attacks = tables.read_parts(ctx.exp_dir)["t1"]["attacks"]
    assert all(x["compute_frac"] == pytest.approx(x["flops"] / reference.result["flops"]) for x in attacks)


def test_robustness_formula():
    rows = [
        {"kind": "baseline", "method": "pure", "status": "ok", "forget_acc_attacked": 0.2},
        {"kind": "baseline", "method": "suppressed", "status": "ok", "forget_acc_attacked": 0.6,
         "forget_acc_attacked_suppressed": 0.6},
        {"kind": "defender", "status": "ok", "forget_acc_attacked": 0.3, "forget_acc_attacked_suppressed": 0.6},
        {"kind": "defender", "status": "ok", "forget_acc_attacked": 0.1, "forget_acc_attacked_suppressed": 0.6},
        {"kind": "defender", "status": "error", "forget_acc_attacked": None, "forget_acc_attacked_suppressed": 0.6},
    ]
    got = [r.get("robustness") for r in tables.add_robustness(rows)]
    assert got[0] == 1.0 and got[1] == 0.0 and got[4] is None  # pure: 1 by definition
    assert got[2] == pytest.approx(0.75) and got[3] == pytest.approx(1.25)  # beyond pure: > 1
    assert all("robustness" not in r for r in rows)  # inputs untouched
    assert tables.add_robustness(rows[:1] + rows[2:])[0].get("robustness") is None  # no suppressed row


def test_student_is_a_trainable_corrupted_copy_or_a_fresh_model():
    teacher = _model(0)
    for p in teacher.parameters():
        p.requires_grad_(False)
    copy = undo.student(teacher, "corrupt", 0.0, 0.1, 0)
    assert all(p.requires_grad for p in copy.parameters())
    assert all(torch.equal(a, b) for a, b in zip(copy.parameters(), teacher.parameters()))
    fresh = undo.student(teacher, "fresh", None, None, 3)
    assert fresh.config.to_dict() == teacher.config.to_dict()
    assert all(p.requires_grad for p in fresh.parameters())
    assert not torch.equal(fresh.transformer.h[0].mlp.c_fc.weight, teacher.transformer.h[0].mlp.c_fc.weight)
    assert all(not p.requires_grad for p in teacher.parameters())  # the teacher is left frozen
    with pytest.raises(ValueError, match="init"):
        undo.student(teacher, "noise", 0.5, 0.1, 0)


def test_undo_dimensions_join_the_outer_search():
    import optuna

    from search.driver import _define_by_run

    cfg = config.load(None, ["defender.undo.init=corrupt"])
    assert set(cfg.defender.shared_space()) == {"undo.alpha", "undo.beta", "undo.steps", "undo.lr"}
    fresh = config.load(None, ["defender.undo.init=fresh", "defender.undo.params.lr=1e-3"])
    assert set(fresh.defender.shared_space()) == {"undo.steps"}  # α, β do not apply; lr is fixed
    multi = config.load(None, ["defender.method=[graddiff,npo]", "defender.undo.params.beta=0.1",
                               "defender.params.graddiff.lam=5"])
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(0))
    for _ in range(6):
        trial = study.ask()
        _define_by_run(trial, multi.defender.search_space(), multi.defender.shared_space())
        resolved = resolve(multi.defender, common_spec(multi), trial.params)
        undo_point = {k for k in resolved.values if k.startswith("undo.")}
        assert undo_point == {"undo.alpha", "undo.steps", "undo.lr"} and 0.1 <= resolved.steps[-1].spec.alpha <= 1
        lam = "lam" in resolved.values
        assert not lam if resolved.method == "graddiff" else lam  # fixed ⇒ not searched
        assert resolved.steps[0].spec.params["lam"] == 5.0 if resolved.method == "graddiff" else True
        study.tell(trial, [0.0, 0.0])


def test_the_gemma_config_is_centred_on_undos_wmdp_corruption():
    from tests.conftest import ROOT

    cfg = config.load(ROOT / "configs" / "wmdp_gemma2_2b_undo.yaml")
    space = cfg.defender.shared_space()
    alphas = list(space["undo.alpha"].values)
    assert sorted(alphas)[len(alphas) // 2] == 0.25 and list(space["undo.beta"].values) == [0.0]
    assert cfg.defender.undo.loop.lr == 2e-5 and list(space["undo.lr"].values) == [2e-5]
    assert cfg.attack.batteries == ["undo_relearn"] and cfg.attack.battery_steps is None  # the paper's 500
