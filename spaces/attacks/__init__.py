"""Attack families' search spaces, one module per family (named as the family in
``trainables/families/``), discovered. A module provides ``SPACE`` (its dimensions, named
``<family>_<field>``: a point maps onto the family's spec by that prefix) and ``PRIOR`` (its
informed start). The fine-tune's space is ``spaces/attack.py``."""

from __future__ import annotations

import importlib
import pkgutil

from spaces import attack as finetune
from spaces.dims import Dim

_MODULES = {name: importlib.import_module(f"{__name__}.{name}")
            for _, name, _ in sorted(pkgutil.iter_modules(__path__)) if not name.startswith("_")}
SPACES: dict[str, dict[str, Dim]] = {"finetune": finetune.SPACE, **{n: m.SPACE for n, m in _MODULES.items()}}
PRIORS: dict[str, list[dict]] = {"finetune": finetune.PRIOR, **{n: m.PRIOR for n, m in _MODULES.items()}}
