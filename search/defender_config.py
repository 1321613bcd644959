"""The ``defender:`` section of an experiment config and the one resolver.

``DefenderConfig`` says what the outer study searches: one or several defenders of the registry
(``trainables/defenders.py``), their fixed values and bounds over ``spaces/<defender>.py``,
optionally a ``safeguard`` every method trains on and UNDO after the method (``undo:``,
``UndoConfig``). ``resolve`` turns one point of that search into the fully resolved stage specs
of the defender's pipeline: the unlearning that makes the *suppressed* model from the
reference, then the robustifiers on top of it. With a ``safeguard`` (required by TAR, optional
for any method: LAT on top of RMU, as Sheshadri et al. run it) the suppressed model is the
safeguard's output and the method's own stage trains on it; with ``undo`` (a ``FOLLOWERS``
section) UNDO's distillation follows. The trial (``search/trial.py``) runs whatever steps come
back, so it names neither UNDO nor TAR.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from spaces import points
from spaces.dims import Choice, Dim, check_fixed, check_space, searched, with_bounds
from spaces.undo import SPACE as UNDO_SPACE
from trainables import loop, undo, unlearn
from trainables.defence_spec import REFERENCE, SUPPRESSED, Common
from trainables.defenders import DEFENDERS, STAGE
from trainables.loop import LoopConfig, check_params
from trainables.methods import METHODS
from trainables.strict import Strict
from trainables.undo import DISTILL_LOOP, check_unit

# Each defender's search space is spaces/<defender>.py, found by its name: a defender without one
# fails here, at import. ``SUPERSEDED`` (optional there): a fixed parameter → the dimensions it
# makes meaningless, not searched while it is set.
_SPACES: dict[str, ModuleType] = {m: importlib.import_module(f"spaces.{m}") for m in DEFENDERS}
DEFENDER_SPACES: dict[str, dict[str, Dim]] = {m: mod.SPACE for m, mod in _SPACES.items()}
SUPERSEDED: dict[str, dict[str, tuple[str, ...]]] = {m: getattr(mod, "SUPERSEDED", {}) for m, mod in _SPACES.items()}
MethodName = Literal[tuple(DEFENDERS)]  # type: ignore[valid-type]
ShallowName = Literal[tuple(METHODS)]  # type: ignore[valid-type]


def _in_unit(v: Any, where: str) -> None:
    try:
        check_unit(where, float(v))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: must be a number in [0, 1], got {v!r}") from None


class UndoConfig(Strict):
    """UNDO after the shallow method: corrupt a copy of the suppressed model (or start a fresh
    one) and distil the suppressed model's outputs into it (``trainables/undo.py``).

    The dimensions of ``spaces/undo.py`` (alpha, beta, steps, lr) are searched unless fixed in
    ``params``; ``space`` narrows or widens them (``{values: [...]}`` makes a sweep). With
    ``init: fresh`` alpha and beta do not apply.
    """

    init: Literal["corrupt", "fresh"] = "corrupt"
    temperature: float = Field(1.0, gt=0)
    # Stop once the student's retain accuracy is within epsilon of the teacher's (absolute).
    epsilon: float = Field(0.05, ge=0, le=1)
    loop: LoopConfig = LoopConfig(**DISTILL_LOOP)
    params: dict[str, Any] = {}
    space: dict[str, Any] = {}

    @field_validator("loop", mode="before")
    @classmethod
    def _loop_defaults(cls, v: Any) -> Any:
        """Keys the config leaves out keep the distillation defaults, not LoopConfig's."""
        return {**DISTILL_LOOP, **v} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _check(self) -> "UndoConfig":
        if self.loop.eval_every < 1:
            raise ValueError("loop.eval_every: must be >= 1 (the early stop is checked at evaluations)")
        check_fixed(self.params, UNDO_SPACE, "params")
        check_space(self.space, UNDO_SPACE, "space")
        for name in ("alpha", "beta"):
            if name in self.params:
                _in_unit(self.params[name], f"params.{name}")
            if name in self.space:
                dim = with_bounds(UNDO_SPACE[name], self.space[name])
                for v in dim.values if isinstance(dim, Choice) else (dim.low, dim.high):
                    _in_unit(v, f"space.{name}")
        loop.check_loop_keys(self.params, self.loop.model_dump(), "params")
        return self

    def search_space(self) -> dict[str, Dim]:
        """The searched UNDO dimensions (``init: fresh`` takes no α or β)."""
        skip = {"alpha", "beta"} if self.init == "fresh" else set()
        return searched(UNDO_SPACE, self.space, {**self.params, **dict.fromkeys(skip)})

    def spec(self, common: Common, values: dict[str, Any]) -> undo.Spec:
        """UNDO's distillation spec at the point's ``values`` over the fixed ``params``."""
        loop_keys, strength = _loop_keys({**self.params, **values})  # (steps, lr), (alpha, beta)
        fresh = self.init == "fresh"
        return undo.Spec(
            setting=common.setting, load=common.load, init=self.init,
            alpha=None if fresh else strength["alpha"], beta=None if fresh else strength["beta"],
            temperature=self.temperature, epsilon=self.epsilon,
            forget_fraction=common.forget_fraction,  # the reference's pre-training mix
            loop={**self.loop.model_dump(), **loop_keys}, seed=common.seed,
        )


# Robustifiers that follow every selected method when their section is set (``defender.<name>``,
# a field of DefenderConfig): name → the stage's module (its ``STAGE``, ``LABEL``, ``INPUTS``).
# Their dimensions are searched with the method's, as ``<name>.<dimension>``. TAR, the other
# robustifier, is a defender of the registry on a safeguard.
FOLLOWERS: dict[str, ModuleType] = {"undo": undo}


@dataclass(frozen=True)
class Step:
    """One stage of a defender's pipeline: a registered stage (``trainables/stages.py``), its
    spec, where each of its inputs comes from (``REFERENCE`` or ``SUPPRESSED``: the pipeline's
    first output), and its name in the curves table (the stage's, unless an earlier step ran
    the same stage)."""

    stage: str
    spec: Strict
    inputs: dict[str, str]
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.stage)


class SafeguardConfig(Strict):
    """The model a method trains on instead of the reference: a shallow method at fixed
    hyperparameters (its ``Params`` and loop keys such as ``lr`` and ``steps``; the rest are its
    defaults). TAR's initial safeguard; any method's (e.g. LAT on an RMU model)."""

    method: ShallowName
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check(self) -> "SafeguardConfig":
        check_params(METHODS[self.method].Params, self.params, {}, "params")
        return self


class DefenderConfig(Strict):
    """The defender searched by the outer study: one method or several (the search then picks
    the method too), loop settings that override the methods' defaults, fixed hyperparameters
    and narrower/wider bounds for the dimensions of ``spaces/<method>.py``, optionally a
    ``safeguard`` every method trains on (TAR always has one: random mapping unless named), and
    optionally UNDO (corrupt + distil) after the method.

    ``method: all`` is every unlearning method of the registry (a plug-in joins it by being
    added), TAR aside (a robustifier on a safeguard: name it).

    Keys of ``params`` and ``space`` are a name (for every selected method) or
    ``method.name`` (for one of them), e.g. ``lam`` or ``rmu.c``. A dimension given a value in
    ``params`` (a method hyperparameter, or the loop's ``lr``/``steps``) is fixed, not searched.
    """

    # one method, a list (the search picks the method too), or all: every unlearning method
    method: MethodName | list[MethodName] = "graddiff"
    loop: LoopConfig = LoopConfig()
    params: dict[str, Any] = {}
    space: dict[str, Any] = {}
    undo: UndoConfig | None = None  # a FOLLOWERS section
    safeguard: SafeguardConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, v: Any) -> Any:
        if isinstance(v, dict) and "tar" in v:
            raise ValueError("tar: TAR's safeguard moved to defender.safeguard: {method: ..., params: {...}}")
        return v

    @field_validator("method", mode="before")
    @classmethod
    def _all(cls, v: Any) -> Any:
        return list(METHODS) if v == "all" else v

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
        for name in self.following():
            if any(self.safeguard_for(m) for m in self.methods):
                raise ValueError(f"{name}: {FOLLOWERS[name].LABEL} after a method on a safeguard (TAR, or "
                                 "defender.safeguard) is not supported; search one robustness method at a time")
        for field, table in (("params", self.params), ("space", self.space)):
            for key in table:
                scope, _ = points.split(key)
                if scope is not None and scope not in self.methods:
                    raise ValueError(f"{field}.{key}: {scope} is not a selected method")
        if "tar" in self.methods:
            self._check_tar_box()
        for m in self.methods:
            check_space(points.for_method(self.space, m), DEFENDER_SPACES[m], self._where("space", m))
            fixed = points.for_method(self.params, m)
            check_params(DEFENDERS[m].Params, fixed, self.loop.model_dump(), self._where("params", m))
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

    def _where(self, field: str, method: str) -> str:
        """How a message names ``field`` for ``method``: ``params``, or ``params.rmu`` when
        several methods are selected."""
        return field if len(self.methods) == 1 else f"{field}.{method}"

    def check_layers(self, n: int, source: str) -> None:
        """Every layer index a selected method (or the safeguard) will use, fixed or default
        (its module's ``LAYER_FIELDS``), names one of the model's ``n`` decoder layers
        (``source``: where ``n`` comes from, for the message)."""
        tables = [(m, self.method_params(m), f"defender.{self._where('params', m)}") for m in self.methods]
        if self.safeguard is not None:
            tables.append((self.safeguard.method, self.safeguard.params, "defender.safeguard.params"))
        for method, fixed, at in tables:
            module = DEFENDERS[method]
            hyper = module.Params(**{k: v for k, v in fixed.items() if k in module.Params.model_fields})
            for field in getattr(module, "LAYER_FIELDS", ()):
                value = getattr(hyper, field)
                bad = [i for i in ([] if value is None else value if isinstance(value, list) else [value])
                       if not -n <= i < n]
                given = "" if field in fixed else f" (the default of {method})"
                if value == []:
                    raise ValueError(f"{at}.{field}: an empty list names no layer (leave it out: every layer)")
                if bad:
                    raise ValueError(f"{at}.{field}: {bad[0]}{given} is not among the model's {n} decoder layers "
                                     f"({source}; negative indices count from the last)")

    def safeguard_for(self, method: str) -> SafeguardConfig | None:
        """The safeguard ``method`` trains on: the configured one, else the method's default
        (TAR's random mapping), else None (it unlearns the reference)."""
        default = getattr(DEFENDERS[method], "DEFAULT_SAFEGUARD", None)
        return self.safeguard or (SafeguardConfig(method=default) if default else None)

    def robust(self, method: str) -> bool:
        """Whether ``method``'s pipeline robustifies its suppressed model (which is then a
        baseline of its own: attacked once, before the trials that build on it)."""
        return self.safeguard_for(method) is not None or bool(self.following())

    def label(self) -> str:
        """The defender in a log line: its methods, then the robustifier every method gets."""
        return "/".join(self.methods) + "".join(f" + {FOLLOWERS[n].LABEL}" for n in self.following())

    def method_params(self, method: str) -> dict[str, Any]:
        """The fixed values that apply to ``method`` (hyperparameters and loop keys)."""
        return points.for_method(self.params, method)

    def search_space(self) -> dict[str, dict[str, Dim]]:
        """Each selected method's searched dimensions (fixed ones left out), bounds applied."""
        out = {}
        for m in self.methods:
            fixed = points.for_method(self.params, m)
            gone = {d for k, dims in SUPERSEDED[m].items() if fixed.get(k) is not None for d in dims}
            dims = searched(DEFENDER_SPACES[m], points.for_method(self.space, m), fixed)
            out[m] = {k: v for k, v in dims.items() if k not in gone}
        return out

    def following(self) -> dict[str, Any]:
        """The configured sections of ``FOLLOWERS`` (e.g. ``undo``), by name."""
        return {n: getattr(self, n) for n in FOLLOWERS if getattr(self, n) is not None}

    def shared_space(self) -> dict[str, Dim]:
        """Dimensions searched whatever the method: each follower's, as ``<name>.<dimension>``
        (``undo.alpha``)."""
        return {points.key(n, k): d for n, section in self.following().items() for k, d in section.search_space().items()}

    def single_space(self) -> dict[str, Dim]:
        """Every searched dimension of a single-method defender, UNDO's included (a grid's axes)."""
        return {**next(iter(self.search_space().values())), **self.shared_space()}


@dataclass(frozen=True)
class Resolved:
    """A point of the defender search, resolved: its method, its values as the trial's row
    names them (``param.<name>``; a shared stage's as ``<scope>.<name>``) and its pipeline's
    steps in order."""

    method: str
    values: dict[str, Any]
    steps: list[Step]


def resolve(d: DefenderConfig, common: Common, point: dict[str, Any]) -> Resolved:
    """The one resolver: a point of the defender search (as Optuna drew it) → the fully
    resolved stage specs of its pipeline.

    The point's keys are ``spaces/points.py``'s: with several methods ``method`` and
    ``<method>.<name>``, else plain names; a shared stage's (UNDO's) ``<scope>.<name>``. The
    pipeline: the unlearning that makes the suppressed model from the reference (on a
    safeguard: the safeguard, at its fixed parameters); then, on a safeguard, the method's own
    stage at the point's values; then each configured ``FOLLOWERS`` stage (UNDO's distillation)
    at the point's ``<name>.<dimension>`` values. A stage's values are its defaults, overridden
    by the config's loop, its fixed ``params``, then the point."""
    several = points.METHOD in point
    method = point.get(points.METHOD, d.methods[0])
    mine: dict[str, Any] = {}
    shared: dict[str, dict[str, Any]] = {s: {} for s in FOLLOWERS}
    for k, v in point.items():  # decoded here, inline: the point's values go nowhere else first
        scope, name = points.split(k)
        if k == points.METHOD:
            continue
        if scope == (method if several else None):
            mine[name] = v
        elif scope in shared:
            shared[scope][name] = v
    values = {**d.method_params(method), **mine}
    steps = [suppressor(d, common, method, mine)]
    if d.safeguard_for(method) is not None:
        stage = STAGE[method]  # a shallow method on a safeguard unlearns a second time: named apart
        steps.append(Step(stage, method_spec(d, common, method, values),
                          getattr(DEFENDERS[method], "INPUTS", {"model": SUPPRESSED}),
                          name=f"{stage}.{method}" if stage == "unlearn" else stage))
    for name, section in d.following().items():
        steps.append(Step(FOLLOWERS[name].STAGE, section.spec(common, shared[name]), FOLLOWERS[name].INPUTS))
    row = {**mine, **{points.key(s, n): v for s, vals in shared.items() for n, v in vals.items()}}
    return Resolved(method, row, steps)


def suppressor(d: DefenderConfig, common: Common, method: str, searched: dict[str, Any]) -> Step:
    """The pipeline's first step: the unlearning that makes ``method``'s suppressed model from
    the reference at its fixed values (the config's ``params``) then ``searched``; on a
    safeguard, the safeguard (its method at its fixed parameters: nothing searched reaches it)."""
    guard = d.safeguard_for(method)
    name, values = ((method, {**d.method_params(method), **searched}) if guard is None
                    else (guard.method, guard.params))
    return Step("unlearn", method_spec(d, common, name, values), {"model": REFERENCE})


def _loop_keys(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Values → (loop settings, the rest: a stage's own hyperparameters)."""
    keys = LoopConfig.model_fields
    return {k: v for k, v in values.items() if k in keys}, {k: v for k, v in values.items() if k not in keys}


def method_spec(d: DefenderConfig, common: Common, method: str, values: dict[str, Any]) -> Strict:
    """``method``'s stage spec at ``values``: its default loop, overridden by the config's
    ``loop`` then by the loop keys in ``values``; its hyperparameters are made canonical by the
    spec (defaults filled in)."""
    loop_keys, hyper = _loop_keys(values)
    module = DEFENDERS[method]
    spec = getattr(module, "Spec", unlearn.Spec)  # a defender with a stage of its own (TAR) gives its spec
    return spec(setting=common.setting, method=method, load=common.load, params=hyper, seed=common.seed,
                loop={**module.DEFAULT_LOOP, **d.loop.model_dump(exclude_unset=True), **loop_keys})
