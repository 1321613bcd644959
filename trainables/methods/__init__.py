"""Registry of unlearning methods, discovered: every module of this package (but ``_``-prefixed
helpers) is one method, named by its module, with its loss, defaults and paper; its search space
is ``spaces/<method>.py``. Adding a method is adding those two files; nothing else names it.

A method module provides
  CITATION       the paper (and code) it follows
  LOSS           its loss in one line, for the generated table in docs/methods.md
  DEFAULT_LOOP   its default learning rate and steps on the arithmetic setting
  Params         pydantic model of its hyperparameters and their defaults
  setup(model, params, seed) -> state      frozen copies, control vectors (may return None)
  trainable(model, params) -> parameters   what it optimises (None: every parameter)
  loss(model, forget, retain, params, setting, state) -> scalar tensor
and optionally
  memory(model, params) -> dict             what it adds to the memory estimate (frozen copies,
                                            a loss on hidden states: trainables/memory.Work fields)
  LAYER_FIELDS = ("layer",)                 its Params fields that index decoder layers (an int or a
                                            list; negative from the last): a fixed value outside the
                                            model's layers is refused when the config loads
  STEPS_AWARE = True                        its loss takes ``step`` and ``steps`` keywords (a
                                            coefficient schedule over the run)
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

METHODS: dict[str, ModuleType] = {
    name: importlib.import_module(f"{__name__}.{name}")
    for _, name, _ in sorted(pkgutil.iter_modules(__path__)) if not name.startswith("_")
}
