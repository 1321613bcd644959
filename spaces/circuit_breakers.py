"""Circuit breakers' space: the coefficient scale α around the paper's 5–10, with the loop."""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(1e-4, 3e-3, log=True),
    "steps": Int(20, 200, log=True),
    "alpha": Float(1.0, 100.0, log=True),
}
