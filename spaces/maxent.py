"""MaxEnt's space. UNDO swept MaxEnt's learning rate 10× higher than GradDiff's (6e-5…4e-4 vs.
6e-6…4e-5); our range keeps that ratio to spaces/graddiff.py's."""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(3e-4, 1e-2, log=True),
    "steps": Int(20, 200, log=True),
    "lam": Float(0.3, 10.0, log=True),
}
