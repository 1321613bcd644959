"""Registry of defenders the outer search can pick: every shallow unlearning method (one
``unlearn`` stage) and TAR (a ``tar`` stage on top of an initial safeguard).

Each module gives ``CITATION``, ``DEFAULT_LOOP`` (its loop on arithmetic) and ``Params`` (its
hyperparameters and their defaults); ``STAGE`` names the stage that makes the released model. A
method module may give ``INPUTS`` (its stage's inputs on top of a safeguard; default: the
model), ``DEFAULT_SAFEGUARD`` (it always runs on one) and ``NOT_WITH_STRATEGY`` (parallel
strategies it refuses, and why). The ``defender:`` config section, its search spaces and the
resolver that turns a search point into stage specs are ``search/defender_config.py``.
"""

from __future__ import annotations

from types import ModuleType

from trainables import tar
from trainables.methods import METHODS

DEFENDERS: dict[str, ModuleType] = {**METHODS, "tar": tar}
STAGE: dict[str, str] = {**dict.fromkeys(METHODS, "unlearn"), "tar": tar.STAGE}
