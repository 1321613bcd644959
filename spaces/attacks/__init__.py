"""Attack families' search spaces, one module per family (named as the family in
``trainables/families/``), discovered. A module provides ``SPACE`` (its dimensions, named
``<family>_<field>``: a point maps onto the family's spec by that prefix) and ``PRIOR`` (its
informed start); optionally ``AFTER_FINETUNE`` (a rank: the family is one of the fine-tune's
``then`` choices, which this module adds to the fine-tune's space in rank order — the order
Optuna indexes them by, fixed so that a seed keeps its draws). The fine-tune's space is ``spaces/attack.py``."""

from __future__ import annotations

import importlib
import pkgutil

from spaces.attack import PRIOR as FINETUNE_PRIOR, SPACE as FINETUNE_SPACE
from spaces.dims import Choice, Dim

_MODULES = {name: importlib.import_module(f"{__name__}.{name}")
            for _, name, _ in sorted(pkgutil.iter_modules(__path__)) if not name.startswith("_")}
# the families a fine-tune may hand its model to before it is scored, in their declared order
THEN: tuple[str, ...] = tuple(sorted((n for n, m in _MODULES.items() if hasattr(m, "AFTER_FINETUNE")),
                                     key=lambda n: _MODULES[n].AFTER_FINETUNE))
SPACES: dict[str, dict[str, Dim]] = {"finetune": {**FINETUNE_SPACE, "then": Choice(("none", *THEN))},
                                     **{n: m.SPACE for n, m in _MODULES.items()}}
PRIORS: dict[str, list[dict]] = {"finetune": FINETUNE_PRIOR, **{n: m.PRIOR for n, m in _MODULES.items()}}
