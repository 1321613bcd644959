"""Registry of stages: name → ``run(spec, inputs, out_dir) -> result``.

A stage is a plain function of a JSON-able spec and its input checkpoints (paths by role); it
writes its output checkpoint (if any) into ``out_dir`` and returns a result dict with
``metrics``, ``curve`` [(step, metric, value)], ``flops`` and ``train_wall_s``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from trainables import attack, evaluate, pretrain, tar, undo, unlearn

StageFn = Callable[[dict, dict[str, str], Path], dict]

STAGES: dict[str, StageFn] = {
    "pretrain": pretrain.run,
    "evaluate": evaluate.run,
    "unlearn": unlearn.run,
    "distill": undo.run,
    "tar": tar.run,
    "attack": attack.run,
}
