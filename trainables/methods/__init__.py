"""Registry of unlearning methods: one file per method, each with its loss, defaults and paper.

A method module provides
  CITATION       the paper (and code) it follows
  DEFAULT_LOOP   its default learning rate and steps on the arithmetic setting
  Params         pydantic model of its hyperparameters and their defaults
  setup(model, params, seed) -> state      frozen copies, control vectors (may return None)
  trainable(model, params) -> parameters   what it optimises (None: every parameter)
  loss(model, forget, retain, params, setting, state) -> scalar tensor
and optionally
  memory(model, params) -> dict             what it adds to the memory estimate (frozen copies,
                                            a loss on hidden states: trainables/memory.Work fields)
"""

from __future__ import annotations

from types import ModuleType

from trainables.methods import gradascent, graddiff, lat, maxent, npo, random_mapping, repnoise, rmu

METHODS: dict[str, ModuleType] = {
    "gradascent": gradascent,
    "graddiff": graddiff,
    "lat": lat,
    "maxent": maxent,
    "npo": npo,
    "random_mapping": random_mapping,
    "repnoise": repnoise,
    "rmu": rmu,
}
