"""The attacker's search space: a full fine-tune on the forget facts T (AdamW), its learning
rate and its number of steps."""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(1e-4, 1e-2, log=True),
    "steps": Int(20, 200, log=True),
}
