"""Stage `evaluate`: score a model that is loaded, not trained here (a pre-trained reference
such as Gemma-2-2B, or a pure baseline given by path). No checkpoint is written: the model stays
where it is (hub id or path); the result carries its scores and its pre-training compute."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from trainables import compute, loop, models, settings
from trainables.strict import Strict


class Spec(Strict):
    """A model to score: ``model.pretrained`` names it."""

    setting: dict[str, Any]
    model: models.ModelConfig


def run(spec: Spec | dict, inputs: dict[str, str], out_dir: Path) -> dict:
    """Load ``spec.model`` (a ModelConfig with ``pretrained``) and score it.

    ``flops`` is its pre-training compute, 6·N·``pretrain_tokens`` (NaN when unknown), so that
    every other stage's compute can be given as a fraction of it.
    """
    start = time.perf_counter()
    spec = Spec.model_validate(spec)
    setting, d = settings.load(spec.setting)
    cfg = spec.model
    model = models.build_model(cfg, setting.vocab_size(d), d.seq_len).to(loop.device())
    metrics = setting.score(model, d)
    curve = [(0, k, float(v)) for k, v in metrics.items()]
    tokens = cfg.pretrain_tokens or math.nan  # its pre-training, not this stage's work
    return compute.training_result(model, metrics, curve, tokens, time.perf_counter() - start)
