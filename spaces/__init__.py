"""Search spaces: ``spaces/<defender>.py`` for each defender (found by its name,
``search/defender_config.py``), ``spaces/undo.py`` for UNDO's stage, ``spaces/attack.py`` for the
fine-tuning attacker and ``spaces/attacks/`` for the other attack families; ``dims`` their
dimensions, ``points`` the names of a point's keys, ``batteries`` the papers' fixed attacks."""

from spaces import attack, batteries
from spaces.attacks import SPACES as _FAMILY_SPACES
from spaces.dims import Dim

ATTACK_SPACE: dict[str, Dim] = _FAMILY_SPACES["finetune"]  # then: added by spaces/attacks/
LORA_SPACE: dict[str, Dim] = attack.LORA_SPACE
ATTACK_PRIOR: list[dict] = attack.PRIOR
BATTERIES = batteries.BATTERIES
