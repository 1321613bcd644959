"""``brute_force``: not a paper's grid: the brute-force check that ``bench/front_check.py`` holds
a front against (issue "a front that survives a stronger attacker"), also a
battery a verification attacker may run. Full AdamW and LoRA (r 16, α 32,
every linear layer) × constant learning rates spanning the attack space's
range × {forget, the 50/50 forget/retain mix}, twice the space's longest
attack, evaluated along the way. Arithmetic: 13 rates 1e-4 … 1e-2 (1, 1.5,
2, 3, 5, 7 per decade; 52 runs of 400 steps, at least 10× what the quick
experiment spends attacking a front model, search and verification
together); wmdp: TAR's adversary range widened to 2e-6 … 2e-4, five rates,
1,000 steps (20 runs).
"""

from __future__ import annotations

import itertools

from spaces.batteries._scale import LORA_16_32

BRUTE_FORCE = {  # setting: (learning rates, steps)
    "arithmetic": ((1e-4, 1.5e-4, 2e-4, 3e-4, 5e-4, 7e-4, 1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3, 7e-3, 1e-2), 400),
    "wmdp": ((2e-6, 6e-6, 2e-5, 6e-5, 2e-4), 1000),
}


def battery(steps: int | None, setting: str) -> list[dict]:
    """The points on ``setting``, each ``steps`` long (None: the paper's)."""
    lrs, default_steps = BRUTE_FORCE[setting]
    steps = steps or default_steps
    return [
        {"kind": kind, "optimizer": "adamw", "schedule": "constant", "lr": lr, "steps": steps, "data": data,
         "retain_fraction": 0.5, "n_examples": None,
         **(LORA_16_32 if kind == "lora" else {})}
        for kind, data, lr in itertools.product(("full", "lora"), ("mix", "forget"), lrs)
    ]
