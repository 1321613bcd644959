"""RepNoise's search space on the arithmetic setting: the loop's lr and steps, the ascent and
noise weights (the paper's β 0.001, α 1 are for Llama-2-7B's scale of activations and loss)."""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(1e-4, 3e-3, log=True),
    "steps": Int(20, 200, log=True),
    "alpha": Float(0.1, 4.0, log=True),
    "beta": Float(0.03, 10.0, log=True),
}
