"""GradAscent's space: it collapses retain quickly, so short runs at small learning rates."""

from spaces.dims import Float, Int

SPACE = {"lr": Float(3e-5, 1e-3, log=True), "steps": Int(5, 50, log=True)}
