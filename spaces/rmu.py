"""RMU's space: c and α on log scales (as the WMDP sweeps), around the arithmetic defaults
(c 250, α 10, lr 1e-2, 300 steps)."""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(1e-3, 3e-2, log=True),
    "steps": Int(50, 300, log=True),
    "c": Float(50.0, 500.0, log=True),
    "alpha": Float(1.0, 100.0, log=True),
}
