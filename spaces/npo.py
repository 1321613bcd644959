"""NPO's space: β on a log scale around the paper's 0.1, and the retain weight."""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(1e-4, 3e-3, log=True),
    "steps": Int(20, 200, log=True),
    "beta": Float(0.03, 1.0, log=True),
    "lam": Float(0.3, 10.0, log=True),
}
