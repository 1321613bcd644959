"""Registry of settings, discovered: every module of this package (but ``_``-prefixed helpers) is
one setting, named by its module (``setting.name``); adding a setting is adding its file here.
A setting names its data, its loss on a batch and its scores.

A setting module provides ``Config`` (pydantic, with a literal ``name``), ``build(cfg) -> data``
(with ``retain_train``, ``forget_T``, ``forget_all`` token tensors of one width ``seq_len``, and
the held-out ``retain_eval`` / ``forget_V`` that ``score`` reads) and the functions of
:class:`Setting`; optionally ``bind(cfg, data)``, which returns those functions with the
setting's own constants (a tokenizer's padding id) bound; and optionally ``for_model(cfg,
model_cfg) -> cfg``, which completes its config from the model's (raising ValueError naming the
field). What a method or stage receives as ``setting`` is a :class:`Setting`: the module, or what
its ``bind`` returned. The experiment config's ``setting:`` section is any registered setting's
``Config`` (``SettingConfig``, told apart by ``name``): ``search/`` names no setting.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Annotated, Any, Protocol, Union, runtime_checkable

import torch
from pydantic import Field



@runtime_checkable
class Setting(Protocol):
    """The functions of a setting that losses and stages use."""

    def answer_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The positions that predict an answer token, (B, A, ...) of (B, L, ...): any tensor
        over a row's positions (logits, hidden states) is sliced the same way."""

    def answer_targets(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tokens those positions predict, (B, A)."""

    def answer_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """Which of the (B, A) targets count (False: padding)."""

    def answer_loss(self, logits: torch.Tensor, tokens: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of the counted targets: their mean, or (B, A) with 0 where not counted."""

    def score(self, model: torch.nn.Module, data: Any, retain: bool = True, forget: bool = True) -> dict[str, float]:
        """{"retain_acc", "forget_acc", ...} on the held-out questions; ``retain=False`` leaves
        the retain questions out, ``forget=False`` the forget ones (V, its halves V_sel / V_rep)."""

    def vocab_size(self, data: Any) -> int:
        """The model's vocabulary size for this data."""

SETTINGS: dict[str, ModuleType] = {
    name: importlib.import_module(f"{__name__}.{name}")
    for _, name, _ in sorted(pkgutil.iter_modules(__path__)) if not name.startswith("_")
}
# the config section: one of the settings' Configs, by its literal ``name``
SettingConfig = Annotated[Union[tuple(m.Config for m in SETTINGS.values())], Field(discriminator="name")]
DEFAULT = "arithmetic"  # the built-in setting (the quick experiment's)


def for_model(cfg: Any, model_cfg: Any) -> Any:
    """``cfg`` (a setting's config) completed from the model's config, where its setting says how."""
    module = get(cfg.name)
    return module.for_model(cfg, model_cfg) if hasattr(module, "for_model") else cfg


def get(name: str) -> ModuleType:
    """The setting module registered as ``name``."""
    return SETTINGS[name]


def load(setting_spec: dict) -> tuple[Any, Any]:
    """(the setting's functions, its data) from a stage spec's ``setting`` entry."""
    setting = get(setting_spec["name"])
    cfg = setting.Config(**setting_spec)
    d = setting.build(cfg)
    return (setting.bind(cfg, d) if hasattr(setting, "bind") else setting), d
