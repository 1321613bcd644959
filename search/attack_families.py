"""Attack families in the search: a point's family, the dimensions of every family, which
families train nothing, and each family's worst-case columns. The families themselves are
discovered (``trainables/families/``, ``spaces/attacks/``); nothing here names one but the
fine-tune, whose space and stage predate the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spaces.attacks import SPACES as FAMILY_SPACES
from spaces.dims import Dim
from trainables import heldout
from trainables.families import FAMILIES

if TYPE_CHECKING:
    from search.config import ExperimentConfig


def all_family_dims() -> dict[str, Dim]:
    """Every non-fine-tune family's dimensions (each named ``<family>_<field>``)."""
    return {k: d for name, space in FAMILY_SPACES.items() if name != "finetune" for k, d in space.items()}


def training_free(family: str) -> bool:
    """Whether an attack of ``family`` trains nothing (costs about one evaluation)."""
    return getattr(FAMILIES[family], "TRAINING_FREE", False)


def needs_context(family: str) -> bool:
    """Whether an attack of ``family`` puts tokens before each question (``CONTEXT``)."""
    return getattr(FAMILIES[family], "CONTEXT", False)


def context_room(cfg: ExperimentConfig) -> str | None:
    """Why ``cfg``'s model has no positions before a question, or None where it has: a fresh
    GPT-2 learns one absolute position per token of the setting's row and no more (a rotary
    model has no position table; a pretrained model's own is checked when an attack runs)."""
    if cfg.model.pretrained or cfg.model.arch != "gpt2":
        return None
    return ("a fresh model.arch gpt2 learns one position per token of the setting's row, so nothing "
            "fits before a question (use model.arch llama or gemma2, or a model.pretrained)")


def fit_families(a, cfg: ExperimentConfig, prefix: str) -> None:
    """Leave out of ``a.families`` (an AttackConfig's) the families that put tokens before each
    question where ``cfg``'s model has no room for them, when the families were left to the
    default (every family); raise ValueError naming ``<prefix>families`` (or ``params.family``)
    where one was named."""
    why = context_room(cfg)
    named = [f for f in a.families if needs_context(f)]
    if why is None or not named:
        return
    fixed = a.params.get("family")
    if fixed is not None and needs_context(fixed):
        raise ValueError(f"{prefix}params.family: {fixed} puts tokens before each question; {why}")
    if not a._every_family:
        raise ValueError(f"{prefix}families: {named[0]} puts tokens before each question; {why}")
    a.families = [f for f in a.families if not needs_context(f)]


def family_of(cfg: ExperimentConfig, params: dict) -> str:
    """The family of a point of the attack space: its own ``family``, else the fixed
    ``attack.params.family``, else the search's only family, else the fine-tune."""
    only = cfg.attack.families[0] if cfg.attack.families and len(cfg.attack.families) == 1 else "finetune"
    return {**cfg.attack.params, **params}.get("family", only)


def names_family(family: str, families: list[str], fixed: dict) -> bool:
    """Whether a point of ``family`` names it: every family but the fine-tune does (the archive
    keeps the name), and the fine-tune when the search draws the family."""
    return family != "finetune" or (len(families) > 1 and "family" not in fixed)


def family_columns(values: dict[str, float], n_rep: int, row: dict | None = None) -> dict:
    """``forget_acc_attacked.<family>`` with its 95 % Wilson interval over V_rep's ``n_rep``
    questions (``_lo``, ``_hi``), per family of ``values``; with ``row``, only where the value is
    above the row's (a second attacker's stronger find)."""
    cols = {}
    for family, value in values.items():
        key = f"forget_acc_attacked.{family}"
        old = (row or {}).get(key)
        if row is not None and old is not None and not value > old:
            continue
        cols[key] = value
        cols[f"{key}_lo"], cols[f"{key}_hi"] = heldout.wilson(value, n_rep)
    return cols
