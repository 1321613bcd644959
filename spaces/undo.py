"""UNDO's search space: corruption strength α, noise scale β, distillation budget and rate.

α spans the paper's sweep (0.1 … 1.0); β = 0.1 is the paper's default, searched on a log
scale around it (β = 0 with α = 1 would zero every weight). The budget caps the distillation,
which usually stops earlier, once the student's retain score is within ε of the teacher's.
"""

from spaces.dims import Float, Int

SPACE = {
    "alpha": Float(0.1, 1.0),
    "beta": Float(0.02, 1.0, log=True),
    "steps": Int(200, 3000, log=True),
    "lr": Float(3e-4, 5e-3, log=True),
}
