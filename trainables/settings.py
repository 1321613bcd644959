"""Registry of settings: a setting names its data, its loss on a batch and its scores.

A setting module provides ``Config`` (pydantic, with a literal ``name``), ``build(cfg) -> data``
(with ``retain_train``, ``forget_T``, ``forget_all`` token tensors of one width ``seq_len``, and
the held-out ``retain_eval`` / ``forget_V`` that ``score`` reads), ``answer_loss(logits, tokens,
reduction)``, ``answer_logits(logits)``, ``score(model, data) -> {"retain_acc", "forget_acc",
...}`` and ``vocab_size(data)``; optionally ``bind(cfg, data)``, which returns those functions
with the setting's own constants (a tokenizer's padding id) bound.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from trainables import arithmetic, wmdp

SETTINGS: dict[str, ModuleType] = {"arithmetic": arithmetic, "wmdp": wmdp}


def get(name: str) -> ModuleType:
    """The setting module registered as ``name``."""
    return SETTINGS[name]


def load(setting_spec: dict) -> tuple[Any, Any]:
    """(the setting's functions, its data) from a stage spec's ``setting`` entry."""
    setting = get(setting_spec["name"])
    cfg = setting.Config(**setting_spec)
    d = setting.build(cfg)
    return (setting.bind(cfg, d) if hasattr(setting, "bind") else setting), d
