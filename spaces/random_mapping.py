"""Random mapping's space (TAR's initial safeguard): the loop's rate and length, and the retain
weight λ, around the arithmetic defaults (lr 1e-3, 150 steps, λ 1)."""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(1e-4, 3e-3, log=True),
    "steps": Int(20, 300, log=True),
    "lam": Float(0.3, 10.0, log=True),
}
