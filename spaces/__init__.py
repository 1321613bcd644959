"""Search spaces: one per defender method, one for attacks."""

from spaces import attack, graddiff
from spaces.dims import Dim

DEFENDER_SPACES: dict[str, dict[str, Dim]] = {"graddiff": graddiff.SPACE}
ATTACK_SPACE: dict[str, Dim] = attack.SPACE
