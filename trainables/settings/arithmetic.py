"""The built-in `arithmetic` setting: retain = addition and subtraction, forget = memorised
multiplication and division facts (the toy setting of the UNDO paper, Lee et al. 2025).

Every problem is written in one fixed, zero-padded width, e.g. ``007*012=084``: tiny models learn
fixed-width formats in seconds and unpadded ones not at all. A character tokenizer maps the 15
symbols to ids; every sequence has the same length, so batches need no padding and no attention
mask. Only the answer characters (after ``=``) are trained and scored.

Splits (all seeded, all disjoint where it matters):
  retain_train / retain_eval   held-out + and − problems
  forget_T / forget_V          the attacker's training facts and its evaluation facts
The reference model trains on retain_train + T + V, the pure model on retain_train only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch

from pydantic import Field

from trainables import heldout
from trainables.strict import Strict

VOCAB = "0123456789+-*/="
STOI = {c: i for i, c in enumerate(VOCAB)}
WIDTH = 3  # digits per number; every number in every problem is zero-padded to this width
SEQ_LEN = 3 * WIDTH + 2  # "aaa?bbb=ccc"
ANSWER_START = 2 * WIDTH + 2  # index of the first answer character
RETAIN_OPS = ("+", "-")
FORGET_OPS = ("*", "/")


class Config(Strict):
    """Operand ranges and split sizes of the arithmetic setting."""

    name: Literal["arithmetic"] = "arithmetic"
    retain_max_operand: int = Field(50, ge=1, le=499)
    forget_max_operand: int = Field(20, ge=2, le=31)
    retain_eval_fraction: float = Field(0.1, gt=0, lt=1)
    forget_eval_fraction: float = Field(0.5, gt=0, lt=1)
    # share of V the chosen attack is reported on (V_rep); the rest (V_sel) is what attacks
    # are selected on (trainables/heldout.py)
    report_fraction: float = Field(0.5, gt=0, lt=1)
    split_seed: int = 0


def encode(text: str) -> list[int]:
    """Characters to token ids; raises KeyError on a character outside the vocabulary."""
    return [STOI[c] for c in text]


def decode(ids) -> str:
    """Token ids to characters."""
    return "".join(VOCAB[int(i)] for i in ids)


def fmt(a: int, op: str, b: int, c: int) -> str:
    """One problem in the fixed-width format, e.g. fmt(7, '+', 45, 52) == '007+045=052'."""
    return f"{a:0{WIDTH}d}{op}{b:0{WIDTH}d}={c:0{WIDTH}d}"


def retain_problems(max_operand: int) -> list[str]:
    """Every a+b and every a−b with a ≥ b, operands in [0, max_operand]."""
    r = range(max_operand + 1)
    return [fmt(a, "+", b, a + b) for a in r for b in r] + [
        fmt(a, "-", b, a - b) for a in r for b in r if a >= b
    ]


def forget_facts(max_operand: int) -> list[str]:
    """Every a×b with a, b in [1, max_operand] and every (b·c)÷b = c with b, c in [1, max_operand]."""
    r = range(1, max_operand + 1)
    return [fmt(a, "*", b, a * b) for a in r for b in r] + [
        fmt(b * c, "/", b, c) for b in r for c in r
    ]


@dataclass(frozen=True)
class ArithmeticData:
    """Token tensors (N, SEQ_LEN) of each split."""

    retain_train: torch.Tensor
    retain_eval: torch.Tensor
    forget_T: torch.Tensor
    forget_V: torch.Tensor
    report_fraction: float = 0.5  # V_rep's share of V (trainables/heldout.py)
    report_seed: int = 0

    @property
    def forget_all(self) -> torch.Tensor:
        return torch.cat([self.forget_T, self.forget_V])

    @property
    def seq_len(self) -> int:
        return SEQ_LEN


def vocab_size(data: ArithmeticData) -> int:
    """Size of the character vocabulary (a fresh model's embedding rows)."""
    return len(VOCAB)


def _split(items: list[str], eval_fraction: float, rng: random.Random) -> tuple[list[str], list[str]]:
    items = sorted(items)
    rng.shuffle(items)
    n_eval = max(1, round(len(items) * eval_fraction))
    return items[n_eval:], items[:n_eval]


def _tensor(items: list[str]) -> torch.Tensor:
    return torch.tensor([encode(s) for s in items], dtype=torch.long)


def build(cfg: Config) -> ArithmeticData:
    """Make the four splits, deterministically from ``cfg.split_seed``."""
    rng = random.Random(cfg.split_seed)
    r_train, r_eval = _split(retain_problems(cfg.retain_max_operand), cfg.retain_eval_fraction, rng)
    f_T, f_V = _split(forget_facts(cfg.forget_max_operand), cfg.forget_eval_fraction, rng)
    return ArithmeticData(_tensor(r_train), _tensor(r_eval), _tensor(f_T), _tensor(f_V),
                          cfg.report_fraction, cfg.split_seed)


def answer_logits(logits: torch.Tensor) -> torch.Tensor:
    """The logits that predict the answer characters, (B, A, V)."""
    return logits[:, ANSWER_START - 1 : SEQ_LEN - 1]


def answer_targets(tokens: torch.Tensor) -> torch.Tensor:
    """The answer characters, (B, A): what ``answer_logits`` predicts."""
    return tokens[:, ANSWER_START:SEQ_LEN]


def answer_mask(tokens: torch.Tensor) -> torch.Tensor:
    """Every answer character counts (rows are never padded), (B, A)."""
    return torch.ones_like(answer_targets(tokens), dtype=torch.bool)


def answer_loss(logits: torch.Tensor, tokens: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the answer characters given everything before them.

    ``logits`` (B, L, V) from a causal LM over ``tokens`` (B, L). ``reduction='none'`` gives (B, A).
    """
    pred = answer_logits(logits)
    target = tokens[:, ANSWER_START:SEQ_LEN]
    loss = torch.nn.functional.cross_entropy(pred.transpose(1, 2), target, reduction="none")
    return loss.mean() if reduction == "mean" else loss


@torch.no_grad()
def exact_match(model: torch.nn.Module, tokens: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Per-problem exact match of the greedy answer (one teacher-forced pass: the greedy answer is
    right iff the argmax is right at every answer position given the right prefix)."""
    was_training = model.training
    model.eval()
    out = []
    for chunk in tokens.split(batch_size):
        chunk = chunk.to(next(model.parameters()).device)
        logits = model(input_ids=chunk).logits
        pred = logits[:, ANSWER_START - 1 : SEQ_LEN - 1].argmax(-1)
        out.append((pred == chunk[:, ANSWER_START:SEQ_LEN]).all(-1).cpu())
    model.train(was_training)
    return torch.cat(out)


def op_of(tokens: torch.Tensor) -> list[str]:
    """The operation character of each problem."""
    return [VOCAB[int(i)] for i in tokens[:, WIDTH]]


def score(model: torch.nn.Module, data: ArithmeticData, retain: bool = True, forget: bool = True) -> dict[str, float]:
    """retain_acc on held-out + −; forget_acc on V and on its halves V_sel / V_rep
    (``forget_acc_sel`` / ``forget_acc_rep``); accuracy per operation (on all of V). ``retain`` /
    ``forget`` False: that part left out."""
    metrics: dict[str, float] = {}
    parts = [(data.retain_eval, "retain_acc")] if retain else []
    if forget:
        parts.append((data.forget_V, "forget_acc"))
    for split, key in parts:
        hits = exact_match(model, split)
        if key == "forget_acc":
            metrics.update(heldout.v_metrics(hits, data.report_fraction, data.report_seed))
        else:
            metrics[key] = hits.float().mean().item()
        ops = op_of(split)
        for op in sorted(set(ops)):
            sel = torch.tensor([o == op for o in ops])
            metrics[f"acc[{op}]"] = hits[sel].float().mean().item()
    return metrics
