"""Experiment configuration: YAML, validated on load, with ``--set key.sub=value`` overrides.

Every user mistake (unknown key, wrong type, out-of-range value, missing file) becomes one
``ConfigError`` whose message names the field; ``search/run.py`` prints it and exits 2 before
Ray starts.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from search.tracking import TrackingConfig
from spaces import ATTACK_PRIOR, ATTACK_SPACE, BATTERIES, DEFENDER_SPACES, LORA_SPACE, SUPERSEDED, UNDO_SPACE
from spaces.dims import Choice, Dim, Int, grid_size, with_bounds
from trainables import arithmetic, undo, wmdp
from trainables.loop import LoopConfig
from trainables.strict import Strict as StrictBase
from trainables.defenders import DEFENDERS
from trainables.methods import METHODS
from trainables.settings import SETTINGS
from trainables.models import ModelConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
URI_SCHEMES = ("file", "s3", "gs", "gcs")
DEFAULT_CONFIG = CONFIG_DIR / "quick.yaml"


class ConfigError(ValueError):
    """A user mistake in the configuration or the command line."""


MAX_COUNT = 10_000_000  # the largest step count, trial count or integer bound a config may ask for


class Strict(StrictBase):
    """Every config section: unknown keys, true/false for numbers and non-finite numbers refused."""


class PretrainConfig(Strict):
    """Pre-training of the reference model (retain + forget) and the pure model (retain only).

    With ``model.pretrained`` nothing is pre-trained: the loaded model is the reference and
    ``model.pure_pretrained`` (if given) the pure baseline. ``pure: null`` skips the pure
    baseline (robustness is then not normalised). ``forget_fraction`` is also the forget share
    of UNDO's distillation mix."""

    reference: LoopConfig | None = None
    pure: LoopConfig | None = None
    forget_fraction: float = Field(0.5, gt=0, lt=1)


def _check_space(space: dict[str, Any], base: dict[str, Dim], where: str) -> dict[str, Any]:
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


def _check_fixed(params: dict[str, Any], base: dict[str, Dim], where: str) -> None:
    for name in params:
        if name not in base:
            raise ValueError(f"{where}.{name}: unknown parameter (known: {', '.join(base)})")


def _searched(base: dict[str, Dim], bounds: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Dim]:
    """The dimensions of ``base`` not fixed in ``fixed``, with ``bounds`` applied."""
    return {k: with_bounds(d, bounds[k]) if k in bounds else d for k, d in base.items() if k not in fixed}


def _check_method_params(params_cls: type[BaseModel], fixed: dict[str, Any], loop: dict[str, Any], where: str) -> None:
    """Validate fixed values of a method: its hyperparameters by ``params_cls``, its loop keys
    (``lr``, ``steps``, ...) by ``LoopConfig`` over ``loop``; a mistake names ``where.<field>``."""
    loop_keys = {k: v for k, v in fixed.items() if k in LoopConfig.model_fields}
    try:
        params_cls(**{k: v for k, v in fixed.items() if k not in loop_keys})
        LoopConfig(**{**loop, **loop_keys})
    except ValidationError as e:
        raise ValueError(f"{where}.{_format(e)}") from None


MethodName = Literal[tuple(DEFENDERS)]  # type: ignore[valid-type]
ShallowName = Literal[tuple(METHODS)]  # type: ignore[valid-type]


# Distillation defaults on arithmetic: AdamW, warmup + cosine, clipping (LoopConfig's 1.0).
DISTILL_LOOP = {"steps": 1500, "lr": 2e-3, "schedule": "warmup_cosine", "warmup_steps": 50, "eval_every": 50}


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
        _check_fixed(self.params, UNDO_SPACE, "params")
        _check_space(self.space, UNDO_SPACE, "space")
        for name in ("alpha", "beta"):
            if name in self.params:
                _in_unit(self.params[name], f"params.{name}")
            if name in self.space:
                dim = with_bounds(UNDO_SPACE[name], self.space[name])
                for v in dim.values if isinstance(dim, Choice) else (dim.low, dim.high):
                    _in_unit(v, f"space.{name}")
        try:
            LoopConfig(**{**self.loop.model_dump(), **{k: v for k, v in self.params.items() if k in LoopConfig.model_fields}})
        except ValidationError as e:
            raise ValueError(f"params.{_format(e)}") from None
        return self

    def search_space(self) -> dict[str, Dim]:
        """The searched UNDO dimensions, as ``undo.<name>``."""
        skip = {"alpha", "beta"} if self.init == "fresh" else set()
        dims = _searched(UNDO_SPACE, self.space, {**self.params, **dict.fromkeys(skip)})
        return {f"undo.{k}": d for k, d in dims.items()}


class TarConfig(Strict):
    """TAR's initial safeguard (``trainables/tar.py``): a shallow method — TAR's random mapping
    by default — at fixed hyperparameters (its ``Params`` and loop keys such as ``lr`` and
    ``steps``; the rest are its defaults). TAR's own hyperparameters and outer loop are searched
    like any method's, through ``defender.params`` / ``defender.space`` (``spaces/tar.py``)."""

    safeguard: ShallowName = "random_mapping"
    safeguard_params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check(self) -> "TarConfig":
        _check_method_params(METHODS[self.safeguard].Params, self.safeguard_params, {}, "safeguard_params")
        return self


def _in_unit(v: Any, where: str) -> None:
    try:
        undo.check_unit(where, float(v))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: must be a number in [0, 1], got {v!r}") from None


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
                out.update({f"{k}.{kk}": vv for kk, vv in val.items()})
            else:
                out[k] = val
        return out

    @property
    def methods(self) -> list[str]:
        return [self.method] if isinstance(self.method, str) else list(dict.fromkeys(self.method))

    def _for(self, table: dict[str, Any], method: str) -> dict[str, Any]:
        return {k.split(".", 1)[-1]: v for k, v in table.items() if "." not in k or k.split(".", 1)[0] == method}

    @model_validator(mode="after")
    def _check(self) -> "DefenderConfig":
        if not self.methods:
            raise ValueError("method: name at least one method")
        if "tar" in self.methods and self.undo is not None:
            raise ValueError("undo: UNDO after TAR is not supported; search one robustness method at a time")
        for field, table in (("params", self.params), ("space", self.space)):
            for key in table:
                if "." in key and key.split(".", 1)[0] not in self.methods:
                    raise ValueError(f"{field}.{key}: {key.split('.', 1)[0]} is not a selected method")
        if "tar" in self.methods:
            self._check_tar_box()
        for m in self.methods:
            where = "space" if len(self.methods) == 1 else f"space.{m}"
            _check_space(self._for(self.space, m), DEFENDER_SPACES[m], where)
            fixed = self._for(self.params, m)
            where = "params" if len(self.methods) == 1 else f"params.{m}"
            _check_method_params(DEFENDERS[m].Params, fixed, self.loop.model_dump(), where)
        return self

    def _check_tar_box(self) -> None:
        """TAR needs subsample ≤ inner_steps at every point the search can draw, not only at
        the defaults: check the box's corners (fixed values, bounds or listed values)."""
        fixed, space = self._for(self.params, "tar"), self._for(self.space, "tar")
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
        return self._for(self.params, method)

    def search_space(self) -> dict[str, dict[str, Dim]]:
        """Each selected method's searched dimensions (fixed ones left out), bounds applied."""
        out = {}
        for m in self.methods:
            fixed = self._for(self.params, m)
            gone = {d for k, dims in SUPERSEDED.get(m, {}).items() if fixed.get(k) is not None for d in dims}
            dims = _searched(DEFENDER_SPACES[m], self._for(self.space, m), fixed)
            out[m] = {k: v for k, v in dims.items() if k not in gone}
        return out

    def shared_space(self) -> dict[str, Dim]:
        """Dimensions searched whatever the method: UNDO's, as ``undo.<name>``."""
        return self.undo.search_space() if self.undo else {}

    def single_space(self) -> dict[str, Dim]:
        """Every searched dimension of a single-method defender, UNDO's included (a grid's axes)."""
        return {**next(iter(self.search_space().values())), **self.shared_space()}


class AttackConfig(Strict):
    """The attacks run against every released model: an adversary search over
    ``spaces/attack.py`` (LoRA's dimensions only for LoRA attacks), and/or fixed batteries
    (``spaces/batteries.py``). ``params`` fixes dimensions (``n_examples: null``: all of T),
    ``space`` sets bounds. The attack and checkpoint are chosen on V_sel over everything run;
    the model's attacked score is the chosen one's V_rep accuracy, averaged over ``reseeds``
    more runs of it (``trainables/heldout.py``)."""

    # searched attacks per model; default 4, or unlimited when budget_flops limits the search
    budget: int | None = Field(None, ge=0, le=MAX_COUNT)
    # the search's compute per model, as a fraction of the reference's pre-training FLOPs (like
    # compute_frac); the search stops once it is spent (batteries and re-runs not counted)
    budget_flops: float | None = Field(None, gt=0)
    reseeds: int = Field(2, ge=0, le=100)  # extra seeds of the chosen attack, averaged on V_rep
    # informed start: the strongest attacks against this experiment's earlier models (archive),
    # then the literature's prior (spaces/attack.py PRIOR), before TPE
    archive: int = Field(2, ge=0)
    prior: int = Field(3, ge=0, le=len(ATTACK_PRIOR))
    loop: LoopConfig = LoopConfig(eval_every=20)
    retain_fraction: float = Field(0.5, gt=0, lt=1)  # retain share of a `mix` attack's batches
    # wmdp: where the attacker's loss is on its question rows (T): the answer letter only (Deeb &
    # Roger's protocol) or every token of header, question, choices and answer. Arithmetic's
    # attack loss is on the answer digits either way.
    loss_on: Literal["answer", "all"] = "answer"
    params: dict[str, Any] = {}
    space: dict[str, Any] = {}
    batteries: list[Literal[tuple(BATTERIES)]] = []  # type: ignore[valid-type]
    # the batteries' step budget; None: each battery's paper budget (undo_relearn 500)
    battery_steps: int | None = Field(None, ge=1, le=MAX_COUNT)
    # median: stop a searched attack at an evaluation (after prune_warmup steps, once
    # prune_startup attacks completed) where its best V_sel accuracy so far is below the median
    # of the completed attacks' at that step (Optuna's MedianPruner rule); asha: successive
    # halving over attack steps (rungs at prune_warmup·reduction_factor^k steps, the top
    # 1/reduction_factor go on). Either is applied inside the stage, so it holds on any worker.
    pruner: Literal["none", "median", "asha"] = "none"
    prune_startup: int = Field(3, ge=1)
    prune_warmup: int = Field(20, ge=0)
    reduction_factor: int = Field(3, ge=2)
    # searched attacks run at once (Optuna threads; each a stage of its own, on its own Ray Train
    # workers when scaling.num_workers > 0); > 1 makes the search order depend on timing
    concurrency: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "AttackConfig":
        dims = {**ATTACK_SPACE, **LORA_SPACE}
        _check_space(self.space, dims, "space")
        _check_fixed(self.params, dims, "params")
        for name, value in self.params.items():
            dim = dims[name]
            if isinstance(dim, Choice) and value not in dim.values:
                raise ValueError(f"params.{name}: must be one of {list(dim.values)}, got {value!r}")
            if isinstance(dim, Choice) or (value is None and name == "n_examples"):
                continue
            number = not isinstance(value, bool) and isinstance(value, (int, float))
            if not number or (value < 0 if name == "lora_dropout" else value <= 0):
                raise ValueError(f"params.{name}: must be a positive number, got {value!r}")
            if isinstance(dim, Int) and int(value) != value:
                raise ValueError(f"params.{name}: must be an integer, got {value!r}")
        if self.budget is None:
            self.budget = 4 if self.budget_flops is None else 100_000
        if self.budget == 0 and not self.batteries:
            raise ValueError("budget: 0 runs no attack; give a budget or name batteries")
        if self.loop.eval_every < 1:
            raise ValueError("loop.eval_every: must be >= 1 (attacks are chosen and reported at evaluations)")
        return self

    def search_space(self) -> dict[str, Dim]:
        """The searched attack dimensions (fixed ones left out), bounds applied."""
        return _searched(ATTACK_SPACE, self.space, self.params)

    def lora_space(self) -> dict[str, Dim]:
        """LoRA's searched dimensions, drawn for LoRA attacks only."""
        return _searched(LORA_SPACE, self.space, self.params)


class SearchConfig(Strict):
    """The outer (defender) search."""

    trials: int = Field(8, ge=1, le=MAX_COUNT)
    max_concurrent: int | None = Field(None, ge=1)
    # grid: every point of the searched dimensions once (each a list of values, e.g. an α sweep
    # {values: [0.1, 0.2, ...]}); trials must equal the number of points.
    sampler: Literal["tpe", "nsga2", "random", "grid"] = "tpe"
    # Trials whose released model falls below this retain accuracy are infeasible: marked so in
    # trials.parquet, never on the front, and reported to the search as the worst attacked score.
    retain_floor: float | None = Field(None, ge=0, le=1)
    # times Tune restarts a trial whose process or node died (spot preemption); a trial that
    # raises (NaN loss, a bug) fails the same way again, so keep this small
    max_failures: int = Field(0, ge=0)


class ScalingConfig(Strict):
    """Ray Train scaling of every stage: ``num_workers: 0`` runs in-process (local mode); N
    workers train with DDP (gloo on CPUs, NCCL on GPUs), each with ``gpus_per_worker`` GPUs when
    ``use_gpu``. ``max_failures``: restarts of a stage's worker group after a worker is lost.

    With GPUs the driver runs as many trials at once as the cluster's GPUs hold (each trial
    runs ``attack.concurrency`` stages at once), so trials never wait on each other's placement
    groups; ``cluster_gpus`` gives that count for an autoscaling cluster that starts with none."""

    num_workers: int = Field(0, ge=0)
    # ddp: a full replica per worker; fsdp: parameters, gradients and optimizer state sharded
    # over the workers (a model too large for one GPU); not for TAR
    strategy: Literal["ddp", "fsdp"] = "ddp"
    use_gpu: bool = False
    gpus_per_worker: float = Field(1.0, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(0, ge=0)
    cluster_gpus: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _gpu(self) -> "ScalingConfig":
        if self.use_gpu and self.num_workers == 0:
            raise ValueError("use_gpu: needs num_workers >= 1")
        return self

    def resources_per_worker(self) -> dict[str, float]:
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.use_gpu else {})}


def trial_concurrency(cfg: "ExperimentConfig", cluster_gpus: float) -> int | None:
    """Trials to run at once: ``search.max_concurrent`` if set; with GPUs, as many as the
    cluster's GPUs hold (a trial's stages need workers × GPUs each, ``attack.concurrency`` of
    them at once); else None (Tune fills the CPUs). Raises ConfigError where one trial needs
    more GPUs than the cluster has."""
    if cfg.search.max_concurrent:
        return cfg.search.max_concurrent
    s = cfg.scaling
    if not s.use_gpu:
        return None
    gpus = cfg.scaling.cluster_gpus or cluster_gpus
    per_trial = s.num_workers * s.gpus_per_worker * cfg.attack.concurrency
    if gpus < per_trial:
        raise ConfigError(
            f"scaling: a trial needs {per_trial:g} GPUs (num_workers × gpus_per_worker × "
            f"attack.concurrency) and the cluster has {gpus:g}; set scaling.cluster_gpus to the "
            "GPUs an autoscaling cluster grows to, or use fewer workers")
    return int(gpus // per_trial)


class ExperimentConfig(Strict):
    """One experiment: a setting, a model, a defender searched against a searched attacker."""

    experiment: str = Field("quick", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    setting: Annotated[arithmetic.Config | wmdp.Config, Field(discriminator="name")] = arithmetic.Config()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    defender: DefenderConfig = DefenderConfig()
    attack: AttackConfig = AttackConfig()
    search: SearchConfig = SearchConfig()
    scaling: ScalingConfig = ScalingConfig()
    tracking: TrackingConfig = TrackingConfig()
    storage: str = "results"
    cache_dir: str = "~/.cache/tamper-search"
    ray_address: str | None = None
    ray_num_cpus: int | None = Field(None, ge=1)

    @field_validator("storage", "cache_dir")
    @classmethod
    def _location(cls, v: str) -> str:
        """A local folder (or one to be made) or a URI of a file system pyarrow knows; checked
        here so that a bad one never gets as far as Ray."""
        if "://" in v:
            scheme = v.split("://", 1)[0]
            if scheme not in URI_SCHEMES:
                raise ValueError(f"unknown URI scheme {scheme!r} (use a path or one of: "
                                 f"{', '.join(s + '://' for s in URI_SCHEMES)})")
            return v
        path = Path(os.path.expanduser(v))
        for p in (path, *path.parents):
            if p.exists():
                if not p.is_dir():
                    raise ValueError(f"{p} is a file, not a folder")
                break
        return v

    @model_validator(mode="after")
    def _model(self) -> "ExperimentConfig":
        m = self.model
        if not m.pretrained and m.d_model % m.n_head:
            raise ValueError("model.d_model must be divisible by model.n_head")
        if m.pretrained:
            if m.pretrain_tokens is None:
                raise ValueError("model.pretrain_tokens: required with model.pretrained (compute "
                                 "is reported as a fraction of the model's pre-training)")
            for field in ("pretrained", "pure_pretrained"):
                path = getattr(m, field)
                if path and wmdp.missing(path):
                    raise ValueError(f"model.{field}: no such file or folder: {path}")
        else:
            if m.pure_pretrained:
                raise ValueError("model.pure_pretrained: needs model.pretrained (a fresh model's "
                                 "pure baseline is trained by pretrain.pure)")
            if self.pretrain.reference is None:
                raise ValueError("pretrain.reference: required to train a fresh model (or set model.pretrained)")
        if self.setting.name == "wmdp" and not self.setting.tokenizer:
            if not m.pretrained:
                raise ValueError("setting.tokenizer: required when the model is not model.pretrained")
            self.setting.tokenizer = m.pretrained
        if self.search.sampler == "grid":
            self._check_grid()
        if self.scaling.strategy == "fsdp" and "tar" in self.defender.methods:
            raise ValueError("scaling.strategy: fsdp is not supported with defender.method tar "
                             "(its inner-loop snapshot and first-order gradient assume full "
                             "parameters); use ddp")
        return self

    @property
    def baseline_kinds(self) -> tuple[str, ...]:
        """The model baselines of this experiment: the reference, and the pure model if any."""
        pure = self.model.pure_pretrained if self.model.pretrained else self.pretrain.pure
        return ("pure", "reference") if pure else ("reference",)

    def _check_grid(self) -> None:
        if len(self.defender.methods) > 1:
            raise ValueError("search.sampler: grid needs a single defender.method")
        dims = self.defender.single_space()
        for name, dim in dims.items():
            if not isinstance(dim, Choice):
                where = f"defender.undo.space.{name[5:]}" if name.startswith("undo.") else f"defender.space.{name}"
                raise ValueError(f"search.sampler: grid needs a list of values for every searched "
                                 f"dimension; {where} is a range (give {{values: [...]}} or fix it in params)")
        n = grid_size(dims)
        if self.search.trials != n:
            raise ValueError(f"search.trials: the grid has {n} points; set trials: {n}")


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = list(e["loc"])
        if loc[:1] == ["setting"] and len(loc) > 1 and loc[1] in SETTINGS:
            del loc[1]  # the union's tag: the user wrote setting.<field>
        where = ".".join(str(p) for p in loc) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        named = re.match(r"^([A-Za-z_][\w.\[\]]*): (.*)$", msg, re.S)
        if named and loc:  # a nested model's validator names its own field: setting.forget_corpus
            where, msg = f"{where}.{named.group(1)}", named.group(2)
        lines.append(f"{where}: {msg}" if e["loc"] else msg)
    return "; ".join(lines)


class Loader(yaml.SafeLoader):
    """YAML as a researcher writes it: ``1e-4`` is a number (YAML 1.1 wants ``1.0e-4``), and a
    key given twice in one mapping is an error (YAML keeps the last and drops the first block)."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _mapping(loader: Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicated key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _yaml_error(where: str, e: yaml.YAMLError) -> ConfigError:
    """One line: where, line and column, what is wrong."""
    mark = getattr(e, "problem_mark", None)
    at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return ConfigError(f"{where}{at}: not valid YAML: {problem}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (['a', 'b', 'c'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.load(raw, Loader=Loader) if raw else ""
    except yaml.YAMLError as e:
        raise _yaml_error(f"--set {key}", e) from None
    return key.split("."), value


def _finite(node: Any, where: str) -> None:
    """Refuse .inf / .nan anywhere (also inside free-form params and space bounds)."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{where}: must be a finite number, got {node}")
    if isinstance(node, dict):
        for k, v in node.items():
            _finite(v, f"{where}.{k}" if where else str(k))
    if isinstance(node, list):
        for i, v in enumerate(node):
            _finite(v, f"{where}.{i}")


def apply_override(raw: dict, path: list[str], value: Any) -> None:
    """Set ``raw[path[0]]...[path[-1]] = value``, creating nested mappings."""
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part} is not a mapping")
        node = child
    node[path[-1]] = value


def merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """One config file as a mapping, its ``base:`` (a path relative to the file) read first
    and merged under it, so a config states only what differs from the one it extends."""
    if path.resolve() in chain:
        raise ConfigError(f"--config {path}: base: cycle ({' -> '.join(p.name for p in (*chain, path))})")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise _yaml_error(f"--config {path}", e) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: top level must be a mapping")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path.name}: base: expected the path of another config, got {base!r}")
    base_path = (path.parent / os.path.expanduser(base)).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path.name}: base: no such file: {base_path}")
    return merge(_read(base_path, (*chain, path.resolve())), raw)


def load(path: str | Path | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read (with its ``base:`` chain), override and validate an experiment config; raises
    ConfigError on any mistake."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"--config: no such file: {path}")
    raw = _read(path)
    for text in overrides:
        apply_override(raw, *parse_override(text))
    try:
        _finite(raw, "")
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from None
    try:
        return ExperimentConfig(**raw)
    except ValidationError as e:
        raise ConfigError(f"{path.name}: {_format(e)}") from None
    except ValueError as e:  # raised by a validator outside pydantic's wrapping
        raise ConfigError(f"{path.name}: {e}") from None
