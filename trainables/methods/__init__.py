"""Registry of unlearning methods: one file per method, each with its loss, defaults and paper.

A method module provides ``Params`` (pydantic: its hyperparameters and their defaults),
``REFERENCE`` (the paper) and ``loss(model, forget_batch, retain_batch, params, setting)``.
"""

from __future__ import annotations

from types import ModuleType

from trainables.methods import graddiff

METHODS: dict[str, ModuleType] = {"graddiff": graddiff}
