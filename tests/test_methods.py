"""The shallow unlearning suite: each loss against its paper's formula on small tensors, RMU's
parameter selection across architectures, and the registry/spaces agreeing."""

import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from search.defender_config import DEFENDER_SPACES
from trainables.settings import arithmetic as A
from trainables.loop import LoopConfig, train
from trainables.defenders import DEFENDERS, STAGE
from trainables.methods import METHODS, gradascent, lat, maxent, npo, repnoise, rmu
from trainables.models import ModelConfig, build_model


class FixedLogits(torch.nn.Module):
    """A 'model' returning given logits per batch (keyed by the batch's first token)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, input_ids):
        return type("Out", (), {"logits": self.table[int(input_ids[0, 0])]})()


def _batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randint(0, 15, (3, A.SEQ_LEN), generator=g)
    r = torch.randint(0, 15, (3, A.SEQ_LEN), generator=g)
    f[:, 0], r[:, 0] = 1, 2
    return f, r, torch.randn(3, A.SEQ_LEN, 15, generator=g), torch.randn(3, A.SEQ_LEN, 15, generator=g)


def _ce(logits, tokens):
    vals = [-(torch.log_softmax(logits[b, p - 1], -1)[tokens[b, p]]) for b in range(len(tokens))
            for p in range(A.ANSWER_START, A.SEQ_LEN)]
    return torch.stack(vals).mean().item()


def test_registry_is_every_method_file_and_each_has_its_space_and_paper():
    from pathlib import Path

    import trainables.methods

    files = {p.stem for p in Path(trainables.methods.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert set(METHODS) == files and {"graddiff", "npo", "rmu", "lat"} <= files  # discovered
    assert set(DEFENDERS) == set(DEFENDER_SPACES) == set(METHODS) | {"tar"}
    for name, m in DEFENDERS.items():
        assert m.CITATION and {"lr", "steps"} <= set(m.DEFAULT_LOOP)
        assert name == "tar" or (m.LOSS and callable(m.loss) and callable(m.setup) and callable(m.trainable))
        m.Params()  # defaults validate
        assert {"lr", "steps"} <= set(DEFENDER_SPACES[name])
        assert STAGE[name] == ("tar" if name == "tar" else "unlearn")


def test_gradascent_is_negative_ce():
    f, r, lf, lr = _batches()
    got = gradascent.loss(FixedLogits({1: lf, 2: lr}), f, r, gradascent.Params(), A, None)
    assert got.item() == pytest.approx(-_ce(lf, f), abs=1e-5)


def test_maxent_kl_formula_and_zero_at_uniform():
    f, r, lf, lr = _batches(1)
    got = maxent.loss(FixedLogits({1: lf, 2: lr}), f, r, maxent.Params(lam=0.7), A, None)
    kl = []
    for b in range(3):
        for p in range(A.ANSWER_START, A.SEQ_LEN):
            prob = torch.softmax(lf[b, p - 1], -1)
            kl.append(sum((1 / 15) * math.log((1 / 15) / prob[v].item()) for v in range(15)))
    assert got.item() == pytest.approx(sum(kl) / len(kl) + 0.7 * _ce(lr, r), abs=1e-5)
    uniform = torch.zeros(3, A.SEQ_LEN, 15)
    assert maxent.kl_uniform(uniform).abs().max().item() < 1e-6
    zero_retain = maxent.loss(FixedLogits({1: uniform, 2: lr}), f, r, maxent.Params(lam=0.0), A, None)
    assert abs(zero_retain.item()) < 1e-6


def test_npo_formula_and_value_at_reference():
    f, r, lf, lr = _batches(2)
    ref_logits = torch.randn(3, A.SEQ_LEN, 15, generator=torch.Generator().manual_seed(9))
    model, ref = FixedLogits({1: lf, 2: lr}), FixedLogits({1: ref_logits})
    beta, lam = 0.5, 2.0
    got = npo.loss(model, f, r, npo.Params(beta=beta, lam=lam), A, ref)

    def seq_logp(logits, b):
        return sum(torch.log_softmax(logits[b, p - 1], -1)[f[b, p]].item() for p in range(A.ANSWER_START, A.SEQ_LEN))

    terms = [math.log(1 + math.exp(beta * (seq_logp(lf, b) - seq_logp(ref_logits, b)))) for b in range(3)]
    assert got.item() == pytest.approx((2 / beta) * sum(terms) / 3 + lam * _ce(lr, r), abs=1e-4)
    same = npo.loss(FixedLogits({1: lf, 2: lr}), f, r, npo.Params(beta=beta, lam=0.0), A, FixedLogits({1: lf}))
    assert same.item() == pytest.approx((2 / beta) * math.log(2), abs=1e-6)


def test_rmu_control_vector_and_loss_formula():
    cu = rmu.control_vector(64, 6.5, seed=3)
    assert cu.norm().item() == pytest.approx(6.5, rel=1e-6) and (cu >= 0).all()
    model = build_model(ModelConfig(d_model=32, n_layer=3, n_head=2), 15, A.SEQ_LEN)
    params = rmu.Params(layer=1, c=4.0, alpha=3.0)
    state = rmu.setup(model, params, seed=0)
    f, r, _, _ = _batches(3)
    with torch.no_grad():  # perturb so the retain term is not zero
        model.transformer.h[1].mlp.c_proj.weight.add_(0.05)
    got = rmu.loss(model, f, r, params, A, state).item()
    hs_f = model(input_ids=f, output_hidden_states=True).hidden_states[2]  # output of layer 1
    hs_r = model(input_ids=r, output_hidden_states=True).hidden_states[2]
    hs_r0 = state["frozen"](input_ids=r, output_hidden_states=True).hidden_states[2]
    expected = ((hs_f - state["cu"]) ** 2).mean() + 3.0 * ((hs_r - hs_r0) ** 2).mean()
    assert got == pytest.approx(expected.item(), rel=1e-5)


def test_rmu_trains_only_the_mlp_output_projections_it_should():
    model = build_model(ModelConfig(d_model=32, n_layer=4, n_head=2), 15, A.SEQ_LEN)
    params = rmu.Params(layer=3)
    chosen = rmu.trainable(model, params)
    names = {n for n, p in model.named_parameters() if any(p is c for c in chosen)}
    assert names == {f"transformer.h.{i}.mlp.c_proj.weight" for i in (1, 2, 3)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = rmu.setup(model, params, 0)
    f, r, _, _ = _batches(4)
    train(model, lambda m, s: rmu.loss(m, f, r, params, A, state), LoopConfig(steps=2, lr=1e-2, weight_decay=0.1),
          params=chosen)
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == (n in names), n


@pytest.mark.parametrize("arch, layers, proj", [
    ("llama", "model.layers", "mlp.down_proj"),
    ("mistral", "model.layers", "mlp.down_proj"),
    ("gemma2", "model.layers", "mlp.down_proj"),
    ("gpt2", "transformer.h", "mlp.c_proj"),
])
def test_rmu_finds_layers_across_architectures(arch, layers, proj):
    common = dict(vocab_size=15, num_hidden_layers=3, hidden_size=32, intermediate_size=64,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=16)
    cfg = AutoConfig.for_model("gpt2", vocab_size=15, n_layer=3, n_embd=32, n_head=2, n_positions=16) \
        if arch == "gpt2" else AutoConfig.for_model(arch, **common)
    model = AutoModelForCausalLM.from_config(cfg)
    chosen = rmu.trainable(model, rmu.Params(layer=2))
    named = dict(model.named_parameters())
    assert [n for n, p in named.items() if any(p is c for c in chosen)] == \
        [f"{layers}.{i}.{proj}.weight" for i in (0, 1, 2)]
    state = rmu.setup(model, rmu.Params(layer=2), 0)
    f, r, _, _ = _batches(5)
    assert torch.isfinite(rmu.loss(model, f, r, rmu.Params(layer=2), A, state))
    explicit = rmu.Params(layer=1, layers_path=layers, mlp_out=proj)
    assert len(rmu.trainable(model, explicit)) == 2
    with pytest.raises(ValueError, match="layers_path"):
        rmu.trainable(model, rmu.Params(layers_path="nowhere"))


def _mmd_by_hand(x, y, kernels=5, mul=2.0):
    """MMD² with the five-kernel Gaussian sum, written out with Python floats."""
    z = x.tolist() + y.tolist()
    n, t = len(x), len(z)
    d2 = [[sum((a - b) ** 2 for a, b in zip(z[i], z[j])) for j in range(t)] for i in range(t)]
    m = sum(map(sum, d2)) / (t * t - t)
    k = [[sum(math.exp(-d2[i][j] / (m / mul ** (kernels // 2) * mul**q)) for q in range(kernels))
          for j in range(t)] for i in range(t)]
    block = lambda rows, cols: sum(k[i][j] for i in rows for j in cols) / (n * n)  # noqa: E731
    first, second = range(n), range(n, t)
    return block(first, first) + block(second, second) - block(first, second) - block(second, first)


def test_repnoise_mmd_matches_the_hand_computation():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64) + 1
    assert repnoise.mmd(x, y).item() == pytest.approx(_mmd_by_hand(x, y), rel=1e-9)
    assert repnoise.mmd(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert repnoise.mmd(x, y).item() > repnoise.mmd(x, x + 0.01).item()


def test_repnoise_loss_formula():
    model = build_model(ModelConfig(d_model=16, n_layer=2, n_head=2), 15, A.SEQ_LEN).eval()  # no dropout
    f, r, _, _ = _batches(6)
    params = repnoise.Params(alpha=0.7, beta=2.0)
    torch.manual_seed(7)
    got = repnoise.loss(model, f, r, params, A).item()
    # by hand: every block's MLP output at the answer-predicting positions, one Gaussian draw each
    seen = []
    hooks = [b.mlp.register_forward_hook(lambda m, a, o: seen.append(o.detach())) for b in model.transformer.h]
    out = model(input_ids=f, output_hidden_states=True)
    for h in hooks:
        h.remove()
    torch.manual_seed(7)
    noise = []
    for h in seen:
        x = h[:, A.ANSWER_START - 1 : A.SEQ_LEN - 1].reshape(len(f), -1).double()
        noise.append(_mmd_by_hand(x, torch.randn(x.shape, dtype=torch.float32).double()))
    lens = [_ce(model.lm_head(model.transformer.ln_f(h)), f) for h in out.hidden_states[:-1]] + [_ce(out.logits, f)]
    expected = _ce(model(input_ids=r).logits, r) + 2.0 * sum(noise) / len(noise) - 0.7 * math.log(1 + sum(lens) / len(lens))
    assert got == pytest.approx(expected, rel=1e-4)


def test_lat_away_loss_is_log_one_minus_p_by_hand():
    f, r, lf, _ = _batches(7)
    lf[0, A.ANSWER_START - 1, int(f[0, A.ANSWER_START])] = 30.0  # p → 1 at one target: still exact
    vals = []
    for b in range(len(f)):
        for pos in range(A.ANSWER_START, A.SEQ_LEN):
            z, y = lf[b, pos - 1].double(), int(f[b, pos])
            others = torch.cat([z[:y], z[y + 1:]])
            vals.append(-(torch.logsumexp(others, 0) - torch.logsumexp(z, 0)).item())
    assert lat.away_loss(lf, f, A).item() == pytest.approx(sum(vals) / len(vals), rel=1e-5)
    assert max(vals) > 25  # the saturated target contributes its true −log(1 − p)


def test_lat_adversary_stays_in_the_ball_and_elicits_the_forget_answers():
    delta = torch.randn(3, 5, 8) * 10
    projected = lat.project(delta, 2.0)
    assert torch.allclose(projected.norm(dim=-1), torch.full((3, 5), 2.0), atol=1e-5)  # onto the sphere
    assert torch.allclose(projected / projected.norm(dim=-1, keepdim=True), delta / delta.norm(dim=-1, keepdim=True))
    small = torch.full((1, 1, 8), 0.1)
    assert torch.equal(lat.project(small, 2.0), small)  # inside the ball: unchanged
    model = build_model(ModelConfig(d_model=16, n_layer=2, n_head=2), 15, A.SEQ_LEN).eval()
    f, r, _, _ = _batches(8)
    params = lat.Params(layer=0, epsilon=3.0, pgd_steps=6)
    d = lat.adversary(model, f, params, A)
    assert d.shape == (*f.shape, 16) and (d.norm(dim=-1) <= 3.0 + 1e-4).all()
    ce = lambda: A.answer_loss(model(input_ids=f).logits, f).item()  # noqa: E731
    clean = ce()
    with lat.perturbed(model, params, d):
        attacked = ce()
        h = model(input_ids=f, output_hidden_states=True).hidden_states[1]
    assert attacked < clean  # the perturbation brings the forget answers closer
    assert torch.allclose(h - d, model(input_ids=f, output_hidden_states=True).hidden_states[1], atol=1e-5)
    assert ce() == pytest.approx(clean)  # the hook is gone
    assert all(p.grad is None for p in model.parameters())  # the inner steps leave the model alone
    got = lat.loss(model, f, r, lat.Params(layer=0, epsilon=3.0, pgd_steps=6, lam=0.5), A).item()
    with lat.perturbed(model, params, d):
        away = lat.away_loss(model(input_ids=f).logits, f, A).item()
    assert got == pytest.approx(away + 0.5 * A.answer_loss(model(input_ids=r).logits, r).item(), rel=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_repnoise_and_lat_run_on_real_architectures(arch):
    common = dict(vocab_size=15, num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=16)
    cfg = AutoConfig.for_model("gpt2", vocab_size=15, n_layer=2, n_embd=32, n_head=2, n_positions=16) \
        if arch == "gpt2" else AutoConfig.for_model(arch, **common)
    model = AutoModelForCausalLM.from_config(cfg)
    f, r, _, _ = _batches(9)
    for method, params in ((repnoise, repnoise.Params()), (lat, lat.Params(layer=-1, pgd_steps=2))):
        value = method.loss(model, f, r, params, A)
        value.backward()
        assert torch.isfinite(value) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        model.zero_grad()


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_hidden_states_without_the_vocabulary_projection_are_the_full_forwards(arch):
    """The losses that read hidden states only (circuit breakers, random mapping, TAR's retain
    distance) skip the head on all but one position; the states are the full forward's, bit
    for bit, and their gradients too."""
    from trainables.methods._shared import hidden_states

    common = dict(vocab_size=15, num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=16)
    cfg = AutoConfig.for_model("gpt2", vocab_size=15, n_layer=2, n_embd=32, n_head=2, n_positions=16) \
        if arch == "gpt2" else AutoConfig.for_model(arch, **common)
    model = AutoModelForCausalLM.from_config(cfg).eval()  # GPT-2's default dropout would differ per call
    f, _, _, _ = _batches(3)
    full = model(input_ids=f, output_hidden_states=True)
    assert full.logits.shape[1] == f.shape[1]
    lean = hidden_states(model, f)
    assert len(lean) == len(full.hidden_states) == 3
    for a, b in zip(lean, full.hidden_states):
        assert torch.equal(a, b)
    grads = [torch.autograd.grad(sum(h.square().sum() for h in hs[1:]), model.get_input_embeddings().weight)[0]
             for hs in (lean, model(input_ids=f, output_hidden_states=True).hidden_states)]
    assert torch.equal(*grads)
