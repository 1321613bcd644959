"""The `ablate` family's space (``trainables/families/ablate.py``): the layer the directions
are read at, as a fraction of depth (0: the first layer, 1: the last), and how many.

The prior: one difference-in-means direction at the middle and at the last layer (Arditi et
al. read theirs mid-network; RMU's suppression is injected at an early-middle layer and carried
to the last)."""

from spaces.dims import Float, Int

AFTER_FINETUNE = 3  # a `then:` choice of the fine-tune, the third after none (spaces/attacks/)
SPACE = {
    "ablate_depth": Float(0.0, 1.0),
    "ablate_k": Int(1, 8, log=True),
}
PRIOR = [
    {"ablate_depth": 0.5, "ablate_k": 1},
    {"ablate_depth": 1.0, "ablate_k": 1},
]
