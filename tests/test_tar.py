"""TAR and its random-mapping safeguard: losses against their formulas, the accumulated
tamper-resistance gradient against a hand-rolled computation, the restore, the stage's FLOPs, a
TAR trial's row, and the config."""

import copy
import math
import random

import pytest
import torch

from search import config, tables
from search.trial import Context, baseline, defender, pretrained, suppress, method_spec
from search.runner import Runner, run_stage
from search.defender_config import DEFENDER_SPACES
from trainables.settings import arithmetic as A
from trainables import models, tar
from trainables.methods import METHODS, random_mapping


def _model(seed: int = 0, arch: str = "gpt2"):
    cfg = models.ModelConfig(arch=arch, d_model=16, n_layer=2, n_head=2, init_seed=seed)
    return models.build_model(cfg, len(A.VOCAB), A.SEQ_LEN)


def _draw(tokens, n, seed):
    return tokens[torch.randint(len(tokens), (n,), generator=torch.Generator().manual_seed(seed))]


def test_neg_entropy_by_hand_and_masked_to_real_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=g)

    def by_hand(rows):
        total = 0.0
        for row in rows:
            z = sum(math.exp(x) for x in row)
            total += sum(math.exp(x) / z * (x - math.log(z)) for x in row)
        return total / len(rows)

    assert tar.neg_entropy(logits).item() == pytest.approx(by_hand(logits.reshape(-1, 5).tolist()), rel=1e-5)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)  # 0: padding
    padded = logits.clone()
    padded[~mask] = 100 * torch.randn(int((~mask).sum()), 5, generator=g)  # garbage at padding
    assert tar.neg_entropy(padded, mask).item() == pytest.approx(by_hand(logits[mask].tolist()), rel=1e-5)
    uniform = torch.zeros(1, 4, 7)
    assert tar.neg_entropy(uniform).item() == pytest.approx(-math.log(7), rel=1e-6)  # its minimum


def test_step_weight_and_subsampled_steps():
    p = tar.Params(inner_steps=8, subsample=4, lam=0.5)
    assert tar.tr_steps(p) == [3, 7]
    assert tar.step_weight(7, 8, 0.5) == 1.0
    assert tar.step_weight(3, 8, 0.5) == pytest.approx(math.exp(-2.0))
    with pytest.raises(ValueError, match="subsample"):
        tar.Params(inner_steps=2, subsample=4)


def _tasks(d, p, n_tasks):
    tasks = []
    for t in range(n_tasks):
        batches = [_draw(d.forget_T if i >= 2 * t else d.retain_train, p.adversary_batch_size, 10 * t + i)
                   for i in range(p.inner_steps)]
        tasks.append(tar.Task("forget", [3e-3, 1e-2][t], batches, _draw(d.forget_V, 8, 99 + t)))
    return tasks


def test_accumulated_gradient_matches_a_hand_rolled_computation_and_restores_bit_identically():
    d = A.build(A.Config())
    p = tar.Params(inner_steps=4, subsample=2, lam=0.5, grad_scale=3.0, adversary_batch_size=8, tasks_per_step=2)
    model = _model()
    trained = list(model.parameters())
    before = [q.detach().clone() for q in trained]
    tasks = _tasks(d, p, 2)
    grads, total = tar.tamper_resistance_grads(model, trained, tasks, p, A)
    assert all(torch.equal(q, b) for q, b in zip(trained, before))  # restored bit-identically
    assert all(q.grad is None for q in trained)

    # by hand: each task on its own copy, AdamW steps, autograd.grad of the scaled L_TR
    want = [torch.zeros_like(q) for q in trained]
    want_total = 0.0
    for task in tasks:
        net = copy.deepcopy(model)
        opt = torch.optim.AdamW(net.parameters(), lr=task.lr)
        for i, batch in enumerate(task.batches):
            opt.zero_grad()
            A.answer_loss(net(input_ids=batch).logits, batch).backward()
            opt.step()
            if (i + 1) % 2 == 0:
                logp = torch.log_softmax(A.answer_logits(net(input_ids=task.meta).logits), -1)
                loss = (logp.exp() * logp).sum(-1).mean() * 3.0 * math.exp(0.5 * (i - 3)) / 2
                for w, gr in zip(want, torch.autograd.grad(loss, list(net.parameters()))):
                    w += gr
                want_total += loss.item()
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    assert total == pytest.approx(want_total, rel=1e-5)
    assert sum(g.abs().sum() for g in grads) > 0


def test_linear_term_adds_a_given_gradient_with_value_zero():
    model = _model()
    trained = list(model.parameters())
    grads = [torch.randn_like(q) for q in trained]
    term = tar.linear_term(trained, grads)
    assert term.item() == 0.0
    term.backward()
    assert all(torch.equal(q.grad, g) for q, g in zip(trained, grads))


def test_retain_loss_is_nll_plus_mean_layer_distance():
    d = A.build(A.Config())
    batch = _draw(d.retain_train, 4, 0)
    net, ref = _model(0), _model(1)
    got = tar.retain_loss(net, ref, batch, A)
    out, r = net(input_ids=batch, output_hidden_states=True), ref(input_ids=batch, output_hidden_states=True)
    assert len(out.hidden_states) == 3  # embeddings + 2 layers
    dist = sum(torch.sqrt(((h - g) ** 2).sum(-1)).mean() for h, g in zip(out.hidden_states, r.hidden_states)) / 3
    assert got.item() == pytest.approx((A.answer_loss(out.logits, batch) + dist).item(), rel=1e-5)
    assert tar.retain_loss(net, copy.deepcopy(net), batch, A).item() == pytest.approx(A.answer_loss(out.logits, batch).item(), rel=1e-6)


def test_sample_task_draws_rates_kinds_and_switching_point():
    d = A.build(A.Config())
    pools = {"adversary": d.forget_T, "meta": d.forget_V, "retain": d.retain_train}
    p = tar.Params(inner_steps=20, adversary_lr=1e-3, adversary_lr_spread=4.0, retain_forget=1.0, adversary_batch_size=4)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    kinds = set()
    for _ in range(20):
        task = tar.sample_task(p, pools, 8, rng, gen)
        assert 2.5e-4 <= task.lr <= 4e-3 and len(task.batches) == 20 and task.meta.shape == (8, A.SEQ_LEN)
        ops = [set(A.op_of(b)) for b in task.batches]
        switch = next(i for i, o in enumerate(ops) if o <= set(A.FORGET_OPS))
        assert all(o <= set(A.RETAIN_OPS) for o in ops[:switch])  # retain, then forget
        assert all(o <= set(A.FORGET_OPS) for o in ops[switch:])
        kinds.add(task.kind)
    assert kinds == {"retain_forget"}
    fixed = tar.Params(adversary_lrs=[2e-6, 2e-5, 4e-5], retain_forget=0.0)
    assert {tar.sample_task(fixed, pools, 8, rng, gen).lr for _ in range(30)} == {2e-6, 2e-5, 4e-5}
    assert tar.sample_task(fixed, pools, 8, rng, gen).kind == "forget"


def test_random_mapping_loss_by_hand():
    d = A.build(A.Config())
    forget, retain = _draw(d.forget_all, 4, 0), _draw(d.retain_train, 4, 1)
    model = _model()
    params = random_mapping.Params(lam=0.7)
    state = random_mapping.setup(model, params, seed=3)
    assert state["table"].shape == (len(A.VOCAB), 16)
    torch.testing.assert_close(state["table"], random_mapping.random_table(len(A.VOCAB), 16, 3))  # seeded
    got = random_mapping.loss(model, forget, retain, params, A, state)
    hs = model(input_ids=forget, output_hidden_states=True).hidden_states[1:]
    cos_terms = []
    for h in hs:
        total, n = 0.0, 0
        for b in range(4):
            for t in range(A.ANSWER_START - 1, A.SEQ_LEN - 1):
                r = state["table"][forget[b, t]]
                cos = (h[b, t] @ r / (h[b, t].norm() * r.norm())).item()
                total, n = total + 1 - abs(cos), n + 1
        cos_terms.append(total / n)
    want = sum(cos_terms) / len(cos_terms) + 0.7 * A.answer_loss(model(input_ids=retain).logits, retain).item()
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert METHODS["random_mapping"] is random_mapping and "random_mapping" in DEFENDER_SPACES


@pytest.fixture
def tar_cfg(tmp_path):
    from tests.conftest import TINY

    return config.load(None, [
        *TINY, f"cache_dir={tmp_path / 'cache'}", f"storage={tmp_path / 'results'}",
        "defender.method=tar", "defender.safeguard={method: random_mapping, params: {steps: 5}}",
        "defender.params.steps=3", "defender.params.inner_steps=4", "defender.params.subsample=2",
        "defender.params.adversary_batch_size=8",
    ])


def test_tar_stage_counts_flops_and_logs_the_tamper_resistance_loss(tar_cfg, tmp_path):
    ctx = Context(tar_cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference = pretrained(ctx, "reference")
    safeguard = suppress(ctx, "tar", {}, reference)
    assert safeguard.result["curve"] and run_stage(ctx.runner, "unlearn", method_spec(
        tar_cfg, "random_mapping", {}, fixed={"steps": 5}), {"model": reference}).cached  # the same spec
    spec = method_spec(tar_cfg, "tar", {"tasks_per_step": 2})
    out = run_stage(ctx.runner, "tar", spec, {"model": safeguard, "reference": reference})
    n = out.result["n_params"]
    per_step = 2 * (4 * 8 + 2 * 64) + 64  # 2 tasks × (K adversary + 2 L_TR batches) + retain
    assert out.result["flops"] == 6 * n * 3 * per_step * A.SEQ_LEN + 2 * n * 3 * 64 * A.SEQ_LEN
    tr = [(s, v) for s, k, v in out.result["curve"] if k == "tr_loss"]
    assert [s for s, _ in tr] == [1, 2, 3] and all(v < 0 for _, v in tr)  # negative entropy
    assert not torch.equal(  # the released model is not the safeguard
        next(iter(models.load_model(out.path).parameters())), next(iter(models.load_model(safeguard.path).parameters())))


def test_tar_trial_row_and_safeguard_baseline(tar_cfg, tmp_path):
    ctx = Context(tar_cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference = pretrained(ctx, "reference")
    sup = baseline(ctx, "suppressed", reference, method="tar")
    row = defender(ctx, "t1", {"inner_steps": 4, "grad_scale": 2.0}, reference)
    assert row["method"] == "tar" and row["param.grad_scale"] == 2.0
    assert row["suppressed_key"] == sup["model_key"]  # the initial safeguard, attacked once (cached)
    assert row["forget_acc_attacked_suppressed"] == sup["forget_acc_attacked"]
    assert row["flops.tar"] > 0 and row["flops.distill"] == 0
    assert row["compute_frac"] == pytest.approx((row["flops.unlearn"] + row["flops.tar"]) / reference.result["flops"])
    curves = tables.read_parts(ctx.exp_dir)["t1"]["curves"]
    assert {c["stage"] for c in curves} >= {"unlearn", "tar", "attack"}


def test_tar_dimensions_are_searched_and_bad_tar_configs_name_the_field(tar_cfg):
    dims = config.load(None, ["defender.method=tar"]).defender.search_space()["tar"]
    assert set(dims) == {"inner_steps", "adversary_lr", "adversary_lr_spread", "retain_forget", "subsample",
                         "grad_scale", "lam", "tasks_per_step", "lr", "steps"}
    assert not {"steps", "inner_steps", "subsample"} & set(tar_cfg.defender.search_space()["tar"])  # fixed
    with pytest.raises(config.ConfigError, match="scaling.strategy: fsdp is not supported with defender.method tar"):
        config.load(None, ["defender.method=tar", "scaling.strategy=fsdp", "scaling.num_workers=2"])
    for override, field in [
        ("defender.safeguard.method=tar", "safeguard.method"),
        ("defender.safeguard={method: random_mapping, params: {c: -1}}", "safeguard.params"),
        ("defender.tar.safeguard=rmu", "defender.tar"),
        ("defender.params.retain_forget=2", "params.retain_forget"),
        ("defender.params.subsample=32", "params.subsample"),
        ("defender.space.inner_steps=[64, 4]", "space.inner_steps"),
        ("defender.undo.init=corrupt", "undo"),
    ]:
        with pytest.raises(config.ConfigError, match=field.replace(".", r"\.")):
            config.load(None, ["defender.method=tar", override])
