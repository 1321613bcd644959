"""Registry of settings: a setting names its data, its loss on a batch and its scores.

A setting module provides ``Config`` (pydantic), ``build(cfg) -> data`` (with ``retain_train``,
``retain_eval``, ``forget_T``, ``forget_V``, ``forget_all`` token tensors), ``answer_loss``,
``score(model, data) -> {"retain_acc", "forget_acc", ...}``, ``VOCAB`` and ``SEQ_LEN``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from trainables import arithmetic

SETTINGS: dict[str, ModuleType] = {"arithmetic": arithmetic}


def get(name: str) -> ModuleType:
    """The setting module registered as ``name``."""
    return SETTINGS[name]


def load(setting_spec: dict) -> tuple[ModuleType, Any]:
    """(setting module, its data) from a stage spec's ``setting`` entry."""
    setting = get(setting_spec["name"])
    return setting, setting.build(setting.Config(**setting_spec))
