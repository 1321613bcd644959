"""Search dimensions, declared as data and drawn through Optuna's define-by-run API.

The outer (defender) and inner (attacker) searches draw from the same declarations, so a space
is written once, in ``spaces/<name>.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Union


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class Choice:
    values: tuple


Dim = Union[Float, Int, Choice]


@dataclass(frozen=True)
class At:
    """A point inside a numeric dimension's range, as a quantile of it (on its log scale where
    the dimension is logarithmic): ``At(1.0)`` is the upper bound, ``At(0.5)`` the (geometric)
    middle. A prior written this way follows the bounds a config sets."""

    q: float


def point_in(space: dict[str, Dim], point: dict[str, Any]) -> dict[str, Any]:
    """The values of ``point`` for the dimensions of ``space``: ``At`` quantiles resolved,
    numbers clipped to the bounds, choices the space does not offer (and dimensions it does not
    search) left out, so that a sampler draws them. A numeric dimension's None means "all"
    (``n_examples: null``: all of T, fixed by one config and searched by another: an archived
    attack of the search met by the verification attacker): the top of the range."""
    out: dict[str, Any] = {}
    for name, value in point.items():
        dim = space.get(name)
        if dim is None:
            continue
        if isinstance(dim, Choice):
            if value in dim.values:
                out[name] = value
            continue
        if isinstance(value, At):
            lo, hi = (math.log(dim.low), math.log(dim.high)) if dim.log else (dim.low, dim.high)
            x = lo + value.q * (hi - lo)
            value = math.exp(x) if dim.log else x
        value = dim.high if value is None else min(max(value, dim.low), dim.high)
        out[name] = int(round(value)) if isinstance(dim, Int) else float(value)
    return out


def with_bounds(dim: Dim, bounds: Any) -> Dim:
    """``dim`` with its range replaced: ``[low, high]`` for Float/Int, a list of values for Choice;
    ``{values: [...]}`` turns a Float/Int into a Choice of those values (a sweep, or a grid).

    Raises ValueError naming what is wrong.
    """
    if isinstance(bounds, dict) and not isinstance(dim, Choice):
        if set(bounds) != {"values"} or not isinstance(bounds["values"], (list, tuple)) or not bounds["values"]:
            raise ValueError("must be [low, high] or {values: [v1, v2, ...]}")
        cast = int if isinstance(dim, Int) else float
        values = bounds["values"]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or cast(v) != v for v in values):
            raise ValueError(f"values must be {'integers' if cast is int else 'numbers'}")
        return Choice(tuple(cast(v) for v in values))
    if isinstance(dim, Choice):
        values = tuple(bounds) if isinstance(bounds, (list, tuple)) else (bounds,)
        if not values:
            raise ValueError("needs at least one value")
        return Choice(values)
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
        raise ValueError("must be [low, high]")
    low, high = bounds
    cast = int if isinstance(dim, Int) else float
    if isinstance(low, bool) or isinstance(high, bool) or cast(low) != low or cast(high) != high:
        raise ValueError(f"bounds must be {'integers' if cast is int else 'numbers'}")
    if low > high:
        raise ValueError(f"low {low} > high {high}")
    if dim.log and low <= 0:
        raise ValueError(f"log-scale bounds must be > 0, got {low}")
    return replace(dim, low=cast(low), high=cast(high))


def grid_size(space: dict[str, Dim]) -> int | None:
    """Number of points of the full grid over ``space``; None if a dimension is a range."""
    n = 1
    for dim in space.values():
        if not isinstance(dim, Choice):
            return None
        n *= len(dim.values)
    return n


def suggest(trial: Any, space: dict[str, Dim]) -> dict[str, Any]:
    """Draw every dimension of ``space`` from an ``optuna.Trial``."""
    out: dict[str, Any] = {}
    for name, dim in space.items():
        if isinstance(dim, Float):
            out[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, Int):
            out[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
        else:
            out[name] = trial.suggest_categorical(name, list(dim.values))
    return out


MAX_COUNT = 10_000_000  # the largest step count, trial count or integer bound a config may ask for


def check_space(space: dict[str, Any], base: dict[str, Dim], where: str) -> dict[str, Any]:
    for name, bounds in space.items():
        if name not in base:
            raise ValueError(f"{where}.{name}: unknown dimension (known: {', '.join(base)})")
        try:
            dim = with_bounds(base[name], bounds)
        except ValueError as e:
            raise ValueError(f"{where}.{name}: {e}") from None
        if isinstance(dim, Int) and dim.high > MAX_COUNT:
            raise ValueError(f"{where}.{name}: {dim.high} is beyond the largest allowed ({MAX_COUNT:,})")
    return space


def check_fixed(params: dict[str, Any], base: dict[str, Dim], where: str) -> None:
    for name in params:
        if name not in base:
            raise ValueError(f"{where}.{name}: unknown parameter (known: {', '.join(base)})")


def searched(base: dict[str, Dim], bounds: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Dim]:
    """The dimensions of ``base`` not fixed in ``fixed``, with ``bounds`` applied."""
    return {k: with_bounds(d, bounds[k]) if k in bounds else d for k, d in base.items() if k not in fixed}
