"""SimNPO's loss against its paper's formula, computed by hand on small tensors: the
length-normalised reward on arithmetic rows and on padded next-token rows (padding not counted)."""

import math
from types import SimpleNamespace

import pytest
import torch

from trainables.settings import arithmetic as A
from trainables.settings import wmdp
from trainables.methods import simnpo


class FixedLogits(torch.nn.Module):
    """A 'model' returning given logits per batch (keyed by the batch's first token)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.table[int(input_ids[0, 0])])


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _answer_nll(logits, tokens, positions) -> list[float]:
    """Per row: the mean of −log p(token at p | before p) over ``positions(row)``."""
    out = []
    for b in range(len(tokens)):
        terms = [-torch.log_softmax(logits[b, p - 1], -1)[tokens[b, p]].item() for p in positions(b)]
        out.append(sum(terms) / len(terms))
    return out


def test_simnpo_on_arithmetic_is_the_papers_formula():
    g = torch.Generator().manual_seed(0)
    f, r = torch.randint(0, 15, (4, A.SEQ_LEN), generator=g), torch.randint(0, 15, (4, A.SEQ_LEN), generator=g)
    f[:, 0], r[:, 0] = 1, 2
    lf, lr = torch.randn(4, A.SEQ_LEN, 15, generator=g), torch.randn(4, A.SEQ_LEN, 15, generator=g)
    beta, gamma, lam = 2.5, 0.4, 0.7
    got = simnpo.loss(FixedLogits({1: lf, 2: lr}), f, r, simnpo.Params(beta=beta, gamma=gamma, lam=lam), A, None)
    answer = lambda b: range(A.ANSWER_START, A.SEQ_LEN)  # noqa: E731
    # −(2/β)·log σ(−(β/|y|)·log π(y|x) − γ), with log π(y|x) = −|y|·nll
    forget = [-(2 / beta) * _logsigmoid(-(beta / len(answer(b))) * (-len(answer(b)) * nll) - gamma)
              for b, nll in enumerate(_answer_nll(lf, f, answer))]
    retain = sum(_answer_nll(lr, r, answer)) / len(r)  # rows of equal length: the mean over tokens
    assert got.item() == pytest.approx(sum(forget) / len(forget) + lam * retain, abs=1e-5)


def test_simnpo_normalises_by_the_counted_answer_tokens_on_padded_rows():
    pad, V, L = 0, 11, 7
    lengths = [7, 4, 2]  # real tokens per row; the rest is padding
    g = torch.Generator().manual_seed(1)
    f = torch.randint(1, V, (3, L), generator=g)
    for b, n in enumerate(lengths):
        f[b, n:] = pad
    logits = torch.randn(3, L, V, generator=g)
    setting = SimpleNamespace(answer_loss=lambda lg, t, reduction="mean": wmdp.answer_loss(lg, t, reduction, pad_id=pad),
                              answer_mask=lambda t: wmdp.answer_mask(t, pad))
    got = simnpo.mean_answer_nll(logits, f, setting)
    want = _answer_nll(logits, f, lambda b: range(1, lengths[b]))
    assert got.tolist() == pytest.approx(want, abs=1e-5)
    beta = 0.7
    term = simnpo.simnpo_term(got, beta, 0.0)
    assert term.item() == pytest.approx(sum(-(2 / beta) * _logsigmoid(beta * x) for x in want) / 3, abs=1e-5)


def test_simnpo_is_bounded_where_gradient_ascent_is_not():
    # As the answer grows unlikely (nll → ∞) the forget term tends to 0 and its gradient with it.
    nll = torch.tensor([0.1, 5.0, 50.0], requires_grad=True)
    term = simnpo.simnpo_term(nll, beta=2.5, gamma=0.0)
    term.backward()
    grads = nll.grad.abs().tolist()
    assert grads[0] > grads[1] > grads[2] and grads[2] < 1e-20 and term.item() > 0
