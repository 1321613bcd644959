"""Registry of defenders the outer search can pick: every shallow unlearning method (one
``unlearn`` stage) and TAR (a ``tar`` stage on top of an initial safeguard).

Each module gives ``REFERENCE``, ``DEFAULT_LOOP`` (its loop on arithmetic) and ``Params`` (its
hyperparameters and their defaults); ``STAGE`` names the stage that makes the released model.
"""

from __future__ import annotations

from types import ModuleType

from trainables import tar
from trainables.methods import METHODS

DEFENDERS: dict[str, ModuleType] = {**METHODS, "tar": tar}
STAGE: dict[str, str] = {**dict.fromkeys(METHODS, "unlearn"), "tar": "tar"}
