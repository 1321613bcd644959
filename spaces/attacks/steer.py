"""The `steer` family's space (``trainables/families/steer.py``): the layer (a fraction of
depth), the norm bound (× the residual stream's mean norm there), Adam's rate and steps.

The prior: the middle layer, a bound of the stream's own norm, Adam at 1e-2 for the longest
attack (latent adversaries in LAT and Che et al. are bounded at a fraction to a few times the
activation norm)."""

from spaces.dims import Float, Int

SPACE = {
    "steer_depth": Float(0.0, 1.0),
    "steer_bound": Float(0.1, 4.0, log=True),
    "steer_lr": Float(1e-3, 1e-1, log=True),
    "steer_steps": Int(20, 200, log=True),
}
PRIOR = [
    {"steer_depth": 0.5, "steer_bound": 1.0, "steer_lr": 1e-2, "steer_steps": 200},
]
