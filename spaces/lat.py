"""LAT's search space on the arithmetic setting: the loop's lr and steps, the adversary's radius
and steps, the retain weight (residual norms of the 0.4 M models are ~10; the paper's ε 2–6 is
for Llama-3-8B's)."""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(1e-4, 3e-3, log=True),
    "steps": Int(20, 200, log=True),
    "epsilon": Float(0.5, 16.0, log=True),
    "pgd_steps": Int(1, 8),
    "lam": Float(0.3, 10.0, log=True),
}
