"""Registry of stages: name → its module's ``Spec`` (the typed contract: what the stage is
given) and ``run(spec, inputs, out_dir) -> result``.

A stage is a plain function of its ``Spec`` (or the spec's JSON dump) and its input
checkpoints (paths by role); it writes its output checkpoint (if any) into ``out_dir`` and
returns a result dict with ``metrics``, ``curve`` [(step, metric, value)], ``flops`` and
``train_wall_s``. A stage's cache key is its spec's canonical dump (``search/runner.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from trainables import attack, evaluate, pretrain, tar, undo, unlearn
from trainables.families import FAMILIES
from trainables.strict import Strict

StageFn = Callable[[Strict | dict, dict[str, str], Path], dict]

MODULES = {"pretrain": pretrain, "evaluate": evaluate, "unlearn": unlearn, "distill": undo, "tar": tar, "attack": attack,
           # every attack family's stage (the fine-tune's is ``attack``)
           **{m.STAGE: m for m in FAMILIES.values()}}
STAGES: dict[str, StageFn] = {name: m.run for name, m in MODULES.items()}
SPECS: dict[str, type[Strict]] = {name: m.Spec for name, m in MODULES.items()}
