"""TAR's space: the inner-loop adversary the defender trains against, the weights of its
tamper-resistance gradient, and the outer loop — so the outer search can ask which training
adversary yields the most robust model against the searched attacker.

The adversary's learning-rate range is centred on the attack space's (1e-4 … 1e-2) and spread
by a factor (1: one rate). ``subsample`` ≤ 4 ≤ K keeps every point valid (L_TR is taken at
least once per adversary). Published values (Llama-3-8B) in ``trainables/tar.py``.
"""

from spaces.dims import Float, Int

SPACE = {
    "lr": Float(3e-5, 1e-3, log=True),  # outer
    "steps": Int(30, 200, log=True),  # outer
    "inner_steps": Int(4, 64, log=True),
    "adversary_lr": Float(1e-4, 1e-2, log=True),
    "adversary_lr_spread": Float(1.0, 10.0, log=True),
    "retain_forget": Float(0.0, 1.0),
    "subsample": Int(1, 4),
    "grad_scale": Float(0.5, 16.0, log=True),
    "lam": Float(0.0, 0.5),
    "tasks_per_step": Int(1, 4),
}

# A fixed list of adversary learning rates (the published set) replaces the searched range.
SUPERSEDED = {"adversary_lrs": ("adversary_lr", "adversary_lr_spread")}
