"""Registry of attack families, discovered: every module of this package (but ``_``-prefixed
helpers) is one family, named by its module. Adding a family is adding a file here and its
space under ``spaces/attacks/``; nothing under ``search/`` or ``analysis/`` changes.

A family module provides ``Spec`` (its stage's typed contract: ``setting``, ``load``, ``seed``
and its own fields), ``run(spec, inputs, out_dir, model=None) -> result`` (scored like every
attack: a curve of V_sel / V_rep / retain evaluations, the checkpoint chosen on V_sel, its
FLOPs), ``STAGE`` (its stage name in ``trainables/stages.py``), ``SEEDED`` (whether a re-run
with another seed can differ: a deterministic family's chosen attack is not re-run) and
``CITATION`` (the paper it follows); optionally ``TRAINING_FREE`` (it trains nothing: then
also ``applied(model, spec, d)``, a context manager yielding the model to score, and
``flops(model, spec, d)``) and ``CONTEXT`` (it puts tokens before each question, so the model
needs positions for them).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

FAMILIES: dict[str, ModuleType] = {
    name: importlib.import_module(f"{__name__}.{name}")
    for _, name, _ in sorted(pkgutil.iter_modules(__path__)) if not name.startswith("_")
}


def stage_of(family: str) -> str:
    """The stage that runs an attack of ``family``."""
    return FAMILIES[family].STAGE


def spec_fields(family: str, point: dict) -> dict:
    """A family's own spec fields from a point of the attack space, where its dimensions are
    named ``<family>_<field>`` (``quantize_bits`` → ``bits``)."""
    prefix = f"{family}_"
    return {k.removeprefix(prefix): v for k, v in point.items() if k.startswith(prefix)}
