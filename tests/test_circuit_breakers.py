"""Circuit breakers (Representation Rerouting): the loss against its paper's formula, computed
by hand from the hidden states of a tiny model and its frozen copy; the coefficient schedule;
the target layers."""

import pytest
import torch

from trainables.settings import arithmetic as A
from trainables.loop import LoopConfig, train
from trainables.methods import circuit_breakers as cb
from trainables.models import ModelConfig, build_model


def _setup(seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(d_model=32, n_layer=3, n_head=2), 15, A.SEQ_LEN)
    state = cb.setup(model, cb.Params(), seed)
    with torch.no_grad():  # move the trained model away from its frozen copy
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(seed)
    return model, state, torch.randint(0, 15, (4, A.SEQ_LEN), generator=g), torch.randint(0, 15, (4, A.SEQ_LEN), generator=g)


def _by_hand(model, state, f, r, alpha, step, steps, layers):
    """c_rr·mean ReLU(cos) over the target layers and f's answer positions + c_ret·mean ‖Δh‖ over
    every layer and r's answer positions, position by position."""
    hs = lambda m, t: m(input_ids=t, output_hidden_states=True).hidden_states[1:]  # noqa: E731
    positions = range(A.ANSWER_START - 1, A.SEQ_LEN - 1)  # those that predict the answer
    hf, hf0, hr, hr0 = hs(model, f), hs(state, f), hs(model, r), hs(state, r)
    reroute = []
    for layer in layers:
        vals = []
        for b in range(len(f)):
            for p in positions:
                a, o = hf[layer][b, p], hf0[layer][b, p]
                vals.append(max(0.0, (a @ o / (a.norm() * o.norm())).item()))
        reroute.append(sum(vals) / len(vals))
    retain = []
    for layer in range(len(hr)):
        vals = [(hr[layer][b, p] - hr0[layer][b, p]).norm().item() for b in range(len(r)) for p in positions]
        retain.append(sum(vals) / len(vals))
    c_rr, c_ret = alpha * (1 - step / (2 * steps)), alpha * step / (2 * steps)
    return c_rr * sum(reroute) / len(reroute) + c_ret * sum(retain) / len(retain)


@pytest.mark.parametrize("step, layers", [(0, None), (30, None), (99, [-1]), (50, [0, 2])])
def test_loss_is_the_papers_formula(step, layers):
    model, state, f, r = _setup()
    params = cb.Params(alpha=7.0, layers=layers)
    got = cb.loss(model, f, r, params, A, state, step=step, steps=100).item()
    want = _by_hand(model, state, f, r, 7.0, step, 100, cb.target_layers(layers, 3))
    assert got == pytest.approx(want, rel=1e-5)


def test_schedule_and_value_at_the_original_model():
    assert cb.coefficients(10.0, 0, 100) == (10.0, 0.0)
    assert cb.coefficients(10.0, 100, 100) == (5.0, 5.0)
    model = build_model(ModelConfig(d_model=32, n_layer=2, n_head=2), 15, A.SEQ_LEN)
    state = cb.setup(model, cb.Params(), 0)
    f = torch.randint(0, 15, (4, A.SEQ_LEN))
    # at the original model every cosine is 1 and every distance 0: the loss is c_rr
    got = cb.loss(model, f, f, cb.Params(alpha=3.0), A, state, step=40, steps=100).item()
    assert got == pytest.approx(3.0 * (1 - 0.2), rel=1e-5)


def test_target_layers_and_a_layer_the_model_lacks():
    assert cb.target_layers(None, 3) == [0, 1, 2] and cb.target_layers([-1, 0], 3) == [0, 2]
    with pytest.raises(ValueError, match="layers"):
        cb.target_layers([3], 3)


def test_training_moves_the_model_and_leaves_the_frozen_copy():
    model, state, f, r = _setup(1)
    frozen = [p.detach().clone() for p in state.parameters()]
    params = cb.Params()
    before = cb.loss(model, f, r, params, A, state, step=0, steps=20).item()
    train(model, lambda m, s: cb.loss(m, f, r, params, A, state, step=s, steps=20), LoopConfig(steps=20, lr=1e-2))
    after = cb.loss(model, f, r, params, A, state, step=0, steps=20).item()
    assert after < before and all(torch.equal(a, b) for a, b in zip(frozen, state.parameters()))
