"""Search spaces: one per defender method, one for attacks."""

from spaces import attack, batteries, gradascent, graddiff, lat, maxent, npo, random_mapping, repnoise, rmu, tar
from spaces.dims import Dim

DEFENDER_SPACES: dict[str, dict[str, Dim]] = {
    "gradascent": gradascent.SPACE,
    "graddiff": graddiff.SPACE,
    "lat": lat.SPACE,
    "maxent": maxent.SPACE,
    "npo": npo.SPACE,
    "random_mapping": random_mapping.SPACE,
    "repnoise": repnoise.SPACE,
    "rmu": rmu.SPACE,
    "tar": tar.SPACE,
}
# per method: a fixed parameter → the dimensions it makes meaningless (not searched when it is set)
SUPERSEDED: dict[str, dict[str, tuple[str, ...]]] = {"tar": tar.SUPERSEDED}
ATTACK_SPACE: dict[str, Dim] = attack.SPACE
LORA_SPACE: dict[str, Dim] = attack.LORA_SPACE
ATTACK_PRIOR: list[dict] = attack.PRIOR
BATTERIES = batteries.BATTERIES
