"""GradDiff's search space on the arithmetic setting.

UNDO swept GradDiff's learning rate over 6e-6…4e-5 on its arithmetic models (pre-trained at
lower learning rates than ours); our tiny models pre-train at 3e-3, so the range is moved up by
the same factor. ``lam`` weights the retain term: from ascent-dominated to retain-dominated.
"""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(1e-4, 3e-3, log=True),
    "steps": Int(20, 200, log=True),
    "lam": Float(0.3, 10.0, log=True),
}
