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
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

# Each section's schema lives with what owns it; this module composes them and reads YAML.
from search.cache import DEFAULT_DIR as DEFAULT_CACHE_DIR
from search.attack_families import fit_families
from search.attack_config import AttackConfig
from search.retention import CacheConfig
from search.runner import ScalingConfig
from search.tracking import TrackingConfig
from search.verify import VerifyConfig, attacker
from spaces import points
from spaces.dims import MAX_COUNT, Choice, grid_size
from trainables import architectures, settings
from trainables.settings import SettingConfig
from trainables.sources import missing
from search.defender_config import FOLLOWERS, DefenderConfig, UndoConfig
from trainables.defenders import DEFENDERS
from trainables.models import ModelConfig
from trainables.pretrain import PretrainConfig
from trainables.settings import SETTINGS
from trainables.strict import Strict, format_error

__all__ = ["AttackConfig", "ConfigError", "DefenderConfig", "ExperimentConfig", "PretrainConfig", "ScalingConfig",
           "SearchConfig", "TrackingConfig", "UndoConfig", "VerifyConfig", "load"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
URI_SCHEMES = ("file", "s3", "gs", "gcs")
DEFAULT_CONFIG = CONFIG_DIR / "quick.yaml"


class ConfigError(ValueError):
    """A user mistake in the configuration or the command line."""


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


class ExperimentConfig(Strict):
    """One experiment: a setting, a model, a defender searched against a searched attacker."""

    experiment: str = Field("quick", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    setting: SettingConfig = settings.get(settings.DEFAULT).Config()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    defender: DefenderConfig = DefenderConfig()
    attack: AttackConfig = AttackConfig()
    verify: VerifyConfig = VerifyConfig()
    search: SearchConfig = SearchConfig()
    scaling: ScalingConfig = ScalingConfig()
    tracking: TrackingConfig = TrackingConfig()
    storage: str = "results"
    cache_dir: str = DEFAULT_CACHE_DIR
    cache: CacheConfig = CacheConfig()  # what the cache keeps (search/retention.py)
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
                if path and missing(path):
                    raise ValueError(f"model.{field}: no such file or folder: {path}")
        else:
            if m.pure_pretrained:
                raise ValueError("model.pure_pretrained: needs model.pretrained (a fresh model's "
                                 "pure baseline is trained by pretrain.pure)")
            if self.pretrain.reference is None:
                raise ValueError("pretrain.reference: required to train a fresh model (or set model.pretrained)")
        settings.for_model(self.setting, m)  # completes it in place (wmdp: the tokenizer)
        layers = (m.n_layer, "model.n_layer") if not m.pretrained else \
            (architectures.decoder_layers_of(m.pretrained), f"{m.pretrained}'s config")
        if layers[0] is not None:  # a hub id this machine has no config of is checked when it loads
            self.defender.check_layers(*layers)
        if self.search.sampler == "grid":
            self._check_grid()
        fit_families(self.attack, self, "attack.")
        if self.verify.enabled:
            attacker(self, 1.0, 1.0)  # its params, space and batteries, named verify.<field>
        for m in self.defender.methods:
            why = getattr(DEFENDERS[m], "NOT_WITH_STRATEGY", {}).get(self.scaling.strategy)
            if why:
                raise ValueError(f"scaling.strategy: {self.scaling.strategy} is not supported with "
                                 f"defender.method {m} ({why})")
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
                scope, short = points.split(name)
                where = f"defender.{scope}.space.{short}" if scope in FOLLOWERS else f"defender.space.{name}"
                raise ValueError(f"search.sampler: grid needs a list of values for every searched "
                                 f"dimension; {where} is a range (give {{values: [...]}} or fix it in params)")
        n = grid_size(dims)
        if self.search.trials != n:
            raise ValueError(f"search.trials: the grid has {n} points; set trials: {n}")


def _format(err: ValidationError) -> str:
    return format_error(err, tags=tuple(SETTINGS))


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
