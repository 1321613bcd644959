"""SimNPO's space: β on a log scale around the papers' 0.7–4.5, the reward margin γ (0 in most
of the paper's runs, 3 on MUSE News) and the retain weight."""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(1e-4, 3e-3, log=True),
    "steps": Int(20, 200, log=True),
    "beta": Float(0.3, 10.0, log=True),
    "gamma": Float(0.0, 3.0),
    "lam": Float(0.3, 10.0, log=True),
}
