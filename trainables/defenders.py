"""Registry of defenders the outer search can pick: every shallow unlearning method (one
``unlearn`` stage) and TAR (a ``tar`` stage on top of an initial safeguard).

Each module gives ``REFERENCE``, ``DEFAULT_LOOP`` (its loop on arithmetic) and ``Params`` (its
hyperparameters and their defaults); ``STAGE`` names the stage that makes the released model.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, Literal

from pydantic import field_validator, model_validator

from spaces import DEFENDER_SPACES, SUPERSEDED, points
from spaces.dims import Choice, Dim, check_space, searched, with_bounds
from trainables import tar
from trainables.loop import LoopConfig, check_params
from trainables.methods import METHODS
from trainables.strict import Strict
from trainables.tar import TarConfig
from trainables.undo import UndoConfig

DEFENDERS: dict[str, ModuleType] = {**METHODS, "tar": tar}
STAGE: dict[str, str] = {**dict.fromkeys(METHODS, "unlearn"), "tar": "tar"}
MethodName = Literal[tuple(DEFENDERS)]  # type: ignore[valid-type]


class DefenderConfig(Strict):
    """The defender searched by the outer study: one method or several (the search then picks
    the method too), loop settings that override the methods' defaults, fixed hyperparameters
    and narrower/wider bounds for the dimensions of ``spaces/<method>.py``, and optionally UNDO
    (corrupt + distil) after the method. ``method: tar`` trains TAR on top of the initial
    safeguard that ``tar`` names.

    Keys of ``params`` and ``space`` are a name (for every selected method) or
    ``method.name`` (for one of them), e.g. ``lam`` or ``rmu.c``. A dimension given a value in
    ``params`` (a method hyperparameter, or the loop's ``lr``/``steps``) is fixed, not searched.
    """

    method: MethodName | list[MethodName] = "graddiff"
    loop: LoopConfig = LoopConfig()
    params: dict[str, Any] = {}
    space: dict[str, Any] = {}
    undo: UndoConfig | None = None
    tar: TarConfig = TarConfig()

    @field_validator("params", "space", mode="before")
    @classmethod
    def _flatten(cls, v: Any) -> Any:
        """``{rmu: {c: 3}}`` (YAML nesting, or ``--set defender.params.rmu.c=3``) → ``{"rmu.c": 3}``."""
        if not isinstance(v, dict):
            return v
        out = {}
        for k, val in v.items():
            if k in DEFENDERS and isinstance(val, dict):
                out.update(points.scoped(val, k))
            else:
                out[k] = val
        return out

    @property
    def methods(self) -> list[str]:
        return [self.method] if isinstance(self.method, str) else list(dict.fromkeys(self.method))

    @model_validator(mode="after")
    def _check(self) -> "DefenderConfig":
        if not self.methods:
            raise ValueError("method: name at least one method")
        if "tar" in self.methods and self.undo is not None:
            raise ValueError("undo: UNDO after TAR is not supported; search one robustness method at a time")
        for field, table in (("params", self.params), ("space", self.space)):
            for key in table:
                scope, _ = points.split(key)
                if scope is not None and scope not in self.methods:
                    raise ValueError(f"{field}.{key}: {scope} is not a selected method")
        if "tar" in self.methods:
            self._check_tar_box()
        for m in self.methods:
            where = "space" if len(self.methods) == 1 else f"space.{m}"
            check_space(points.for_method(self.space, m), DEFENDER_SPACES[m], where)
            fixed = points.for_method(self.params, m)
            where = "params" if len(self.methods) == 1 else f"params.{m}"
            check_params(DEFENDERS[m].Params, fixed, self.loop.model_dump(), where)
        return self

    def _check_tar_box(self) -> None:
        """TAR needs subsample ≤ inner_steps at every point the search can draw, not only at
        the defaults: check the box's corners (fixed values, bounds or listed values)."""
        fixed, space = points.for_method(self.params, "tar"), points.for_method(self.space, "tar")
        default = DEFENDERS["tar"].Params()

        def extent(name: str) -> tuple[float, float]:
            if name in fixed:
                return fixed[name], fixed[name]
            dim = DEFENDER_SPACES["tar"].get(name)
            if dim is None:
                return getattr(default, name), getattr(default, name)
            try:
                dim = with_bounds(dim, space[name]) if name in space else dim
            except ValueError:
                return math.inf, -math.inf  # reported by the space check
            values = dim.values if isinstance(dim, Choice) else (dim.low, dim.high)
            return min(values), max(values)

        sub, inner = extent("subsample"), extent("inner_steps")
        if isinstance(sub[1], (int, float)) and isinstance(inner[0], (int, float)) and sub[1] > inner[0]:
            where = "params" if "subsample" in fixed else "space"
            raise ValueError(f"{where}.subsample: can reach {sub[1]} while inner_steps can be {inner[0]}; "
                             "TAR needs subsample <= inner_steps everywhere in the searched box")

    def method_params(self, method: str) -> dict[str, Any]:
        """The fixed values that apply to ``method`` (hyperparameters and loop keys)."""
        return points.for_method(self.params, method)

    def search_space(self) -> dict[str, dict[str, Dim]]:
        """Each selected method's searched dimensions (fixed ones left out), bounds applied."""
        out = {}
        for m in self.methods:
            fixed = points.for_method(self.params, m)
            gone = {d for k, dims in SUPERSEDED.get(m, {}).items() if fixed.get(k) is not None for d in dims}
            dims = searched(DEFENDER_SPACES[m], points.for_method(self.space, m), fixed)
            out[m] = {k: v for k, v in dims.items() if k not in gone}
        return out

    def shared_space(self) -> dict[str, Dim]:
        """Dimensions searched whatever the method: UNDO's, as ``undo.<name>``."""
        return self.undo.search_space() if self.undo else {}

    def single_space(self) -> dict[str, Dim]:
        """Every searched dimension of a single-method defender, UNDO's included (a grid's axes)."""
        return {**next(iter(self.search_space().values())), **self.shared_space()}
