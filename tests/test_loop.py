import pytest
import torch

from trainables import loop
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


def test_stop_fn_ends_training_at_an_evaluation():
    model = torch.nn.Linear(2, 1)
    seen = []

    def loss_fn(net, step):
        seen.append(step)
        return net(torch.ones(1, 2)).pow(2).sum()

    calls = iter([False, False, True])  # step 0, step 3, step 6 → stop
    cfg = loop.LoopConfig(steps=20, eval_every=3, lr=0.01)
    curve, _ = loop.train(model, loss_fn, cfg, eval_fn=lambda m: {"x": 1.0}, stop_fn=lambda m, step: next(calls))
    assert seen == list(range(6)) and max(s for s, _, _ in curve) == 6
    assert loop.last_eval(curve) == {"x": 1.0}
    curve, _ = loop.train(model, loss_fn, cfg, eval_fn=lambda m: {"x": 1.0}, stop_fn=lambda m, step: True)
    assert curve == [(0, "x", 1.0)] and len(seen) == 6  # met before any step: no step taken


def test_eval_at_evaluates_at_the_listed_steps_and_passes_the_step():
    model = torch.nn.Linear(2, 1)
    asked = []
    cfg = loop.LoopConfig(steps=50, eval_every=7, eval_at=[10, 25], lr=0.01)
    curve, _ = loop.train(model, lambda net, step: net(torch.ones(1, 2)).pow(2).sum(), cfg,
                          eval_fn=lambda m: {"x": 1.0}, stop_fn=lambda m, step: asked.append(step) or False)
    assert asked == [0, 10, 25, 50] and sorted({s for s, k, _ in curve if k == "x"}) == [0, 10, 25, 50]
    assert {10, 25, 50} <= {s for s, k, _ in curve if k == "loss"}


def test_schedule_free_adamw_trains_and_leaves_the_evaluated_point_in_the_model():
    """Schedule-Free AdamW (TAR's outer optimiser) trains at y and evaluates at x: every
    evaluation and the returned model see x, the point its library calls ``eval``."""
    import schedulefree

    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.randn(4, 1) + 0.3
    model = torch.nn.Linear(4, 1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = loop.LoopConfig(steps=60, lr=0.05, optimizer="adamw_schedule_free", schedule="warmup_cosine",
                          warmup_steps=5, grad_clip=None, eval_every=20)
    seen = []
    curve, _ = loop.train(model, lambda net, step: (net(x) - y).pow(2).mean(), cfg,
                          eval_fn=lambda m: seen.append((m(x) - y).pow(2).mean().item()) or {"mse": seen[-1]})
    assert seen[-1] < 0.5 * seen[0]
    # the same run by hand with the library, switching modes the same way, ends at the same x
    ref = torch.nn.Linear(4, 1)
    ref.load_state_dict(start)
    opt = schedulefree.AdamWScheduleFree(ref.parameters(), lr=0.05, warmup_steps=5)
    opt.train()
    for _ in range(60):
        opt.zero_grad()
        (ref(x) - y).pow(2).mean().backward()
        opt.step()
    opt.eval()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
