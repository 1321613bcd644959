"""The names of a defender search point's keys: how they are encoded (the resolver,
``search/defender_config.py`` ``resolve``, decodes a point with them).

A point is the flat dict Optuna asks, Tune passes to a trial and the tables store as
``param.*`` columns. With one method its dimensions are plain names (``lr``); with several the
point holds ``method`` and ``<method>.<name>`` (``rmu.c``). A stage shared by every method
(UNDO: ``search/defender_config.py`` ``FOLLOWERS``) names its dimensions ``<name>.<dimension>``
(``undo.alpha``) either way. The config's
``defender.params`` / ``space`` keys use the same ``<method>.<name>`` form.
"""

from __future__ import annotations

from typing import Any

METHOD = "method"


def key(scope: str | None, name: str) -> str:
    """``name`` in ``scope`` (None: unscoped)."""
    return name if scope is None else f"{scope}.{name}"


def split(k: str) -> tuple[str | None, str]:
    """``"rmu.c"`` → ``("rmu", "c")``; ``"lr"`` → ``(None, "lr")``."""
    scope, _, name = k.partition(".")
    return (scope, name) if name else (None, scope)


def scoped(values: dict[str, Any], scope: str | None) -> dict[str, Any]:
    """Every key of ``values`` put in ``scope``."""
    return {key(scope, k): v for k, v in values.items()}


def unscoped(values: dict[str, Any], scope: str | None) -> dict[str, Any]:
    """The keys of ``values`` in ``scope``, without it (``scope`` None: the unscoped keys)."""
    out = {}
    for k, v in values.items():
        s, name = split(k)
        if s == scope:
            out[name] = v
    return out


def for_method(values: dict[str, Any], method: str) -> dict[str, Any]:
    """What applies to ``method`` in a config table: unscoped keys and ``<method>.<name>``."""
    return {**unscoped(values, None), **unscoped(values, method)}
