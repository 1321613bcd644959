"""The ``attack:`` section of an experiment config (and the verification attacker's): which
attacks run against every released model, how many, with which budget, pruning and informed
start. ``search/adversary.py`` runs them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from search.attack_families import all_family_dims
from spaces import ATTACK_PRIOR as PRIOR
from spaces import ATTACK_SPACE, BATTERIES, LORA_SPACE
from spaces.attacks import SPACES as FAMILY_SPACES
from spaces.dims import MAX_COUNT, Choice, Dim, Int, check_fixed, check_space, searched
from trainables.families import FAMILIES
from trainables.loop import LoopConfig
from trainables.strict import Strict


class PastPeak(Strict):
    """When an attack has overshot its peak (``attack.past_peak``)."""

    evals: int = Field(4, ge=1)
    drop: float = Field(0.05, gt=0, le=1)


class AttackConfig(Strict):
    """The attacks run against every released model: an adversary search over
    ``spaces/attack.py`` (LoRA's dimensions only for LoRA attacks), and/or fixed batteries
    (``spaces/batteries/``). ``params`` fixes dimensions (``n_examples: null``: all of T),
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
    prior: int = Field(3, ge=0, le=len(PRIOR))
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
    # stop an attack that has overshot its peak: `evals` evaluations without a new best V_sel
    # accuracy and the latest `drop` below the best (trainables/attack.py); None: every attack
    # runs its steps. Saves the steps of a constant-rate attack that peaked early, which a
    # FLOPs budget (the verification attacker's) then spends on the next point.
    past_peak: PastPeak | None = None
    # attack families searched (trainables/families/: finetune, quantize, prune, ...); None:
    # every registered family that the model can take (a family that puts tokens before each
    # question needs positions for them: search/attack_families.py fit_families). With more than one,
    # the family is a searched dimension and each family's dimensions are drawn only for it;
    # training-free families' informed points run first and do not count against a run-count budget;
    # other trained families' informed points join while the counted ones stay within half of
    # budget, and TPE draws among the families the informed start tried.
    families: list[str] | None = None
    _every_family: bool = PrivateAttr(False)  # families was None: every family that fits

    @model_validator(mode="after")
    def _check(self) -> "AttackConfig":
        if self.families is None:
            self.families = list(FAMILIES)
            self._every_family = True
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"families: unknown family {unknown[0]!r} (one of {sorted(FAMILIES)})" if unknown
                             else f"families: name at least one (of {sorted(FAMILIES)})")
        if len(set(self.families)) < len(self.families):
            raise ValueError(f"families: a family is named twice in {self.families}")
        family = self.params.get("family")
        if family is not None and family not in self.families:
            raise ValueError(f"params.family: {family!r} is not among families {self.families}")
        dims = {**ATTACK_SPACE, **LORA_SPACE, **all_family_dims(), "family": Choice(tuple(FAMILIES))}
        check_space(self.space, dims, "space")
        check_fixed(self.params, dims, "params")
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
        return searched(ATTACK_SPACE, self.space, self.params)

    def lora_space(self) -> dict[str, Dim]:
        """LoRA's searched dimensions, drawn for LoRA attacks only."""
        return searched(LORA_SPACE, self.space, self.params)

    def family_space(self, family: str) -> dict[str, Dim]:
        """A family's searched dimensions (the fine-tune's: ``search_space``, without LoRA's)."""
        return self.search_space() if family == "finetune" else searched(FAMILY_SPACES[family], self.space, self.params)

    def searched_families(self) -> list[str]:
        """The families the search draws from (one, where ``params.family`` fixes it)."""
        return [self.params["family"]] if "family" in self.params else list(self.families)
