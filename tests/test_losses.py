import math

import torch

from trainables.settings import arithmetic as A
from trainables.methods import METHODS, graddiff


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are given per batch (keyed by the batch's first token)."""

    def __init__(self, table: dict[int, torch.Tensor]):
        super().__init__()
        self.table = table

    def forward(self, input_ids):
        return type("Out", (), {"logits": self.table[int(input_ids[0, 0])]})()


def _ce(logits, tokens):
    total, n = 0.0, 0
    for b in range(tokens.shape[0]):
        for pos in range(A.ANSWER_START, A.SEQ_LEN):
            row = logits[b, pos - 1].tolist()
            lse = math.log(sum(math.exp(x) for x in row))
            total += lse - row[int(tokens[b, pos])]
            n += 1
    return total / n


def test_graddiff_loss_matches_formula():
    g = torch.Generator().manual_seed(1)
    forget = torch.randint(0, 15, (2, A.SEQ_LEN), generator=g)
    retain = torch.randint(0, 15, (2, A.SEQ_LEN), generator=g)
    forget[:, 0], retain[:, 0] = 1, 2
    lf = torch.randn(2, A.SEQ_LEN, 15, generator=g)
    lr = torch.randn(2, A.SEQ_LEN, 15, generator=g)
    model = FixedLogits({1: lf, 2: lr})
    for lam in (0.0, 0.5, 3.0):
        got = graddiff.loss(model, forget, retain, graddiff.Params(lam=lam), A)
        expected = -_ce(lf, forget) + lam * _ce(lr, retain)
        assert abs(got.item() - expected) < 1e-5


def test_registry_lists_graddiff_with_reference():
    assert METHODS["graddiff"] is graddiff
    assert "Liu" in graddiff.CITATION
    assert graddiff.Params().lam == 5.0 and graddiff.DEFAULT_LOOP["steps"] > 0
