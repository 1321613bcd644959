import pytest
import torch

from trainables.loop import LoopConfig, NonFiniteLoss, lr_factor, train


def test_schedules():
    assert lr_factor("constant", 0, 100, 10) == 1.0
    assert lr_factor("warmup_constant", 0, 100, 10) == pytest.approx(0.1)
    assert lr_factor("warmup_constant", 50, 100, 10) == 1.0
    assert lr_factor("warmup_cosine", 9, 100, 10) == pytest.approx(0.5 * (1 + __import__("math").cos(__import__("math").pi * 0.09)))
    assert lr_factor("warmup_cosine", 100, 100, 10) == pytest.approx(0.0)


def test_train_reduces_a_quadratic_and_records_curve():
    w = torch.nn.Parameter(torch.tensor([3.0]))
    model = torch.nn.Module()
    model.w = w
    curve, _ = train(model, lambda m, s: (m.w ** 2).sum(), LoopConfig(steps=50, lr=0.1, eval_every=10),
                     eval_fn=lambda m: {"w": m.w.item()})
    assert abs(w.item()) < 1.0
    assert [s for s, k, _ in curve if k == "w"] == [0, 10, 20, 30, 40, 50]


def test_non_finite_loss_fails_the_run():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(NonFiniteLoss):
        train(model, lambda m, s: m.weight.sum() * float("nan"), LoopConfig(steps=3))
