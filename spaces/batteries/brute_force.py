"""``brute_force``: not a paper's grid: the brute-force check that ``bench/front_check.py`` holds
a front against (issue "a front that survives a stronger attacker"), also a
battery a verification attacker may run. Full AdamW and LoRA (r 16, α 32,
every linear layer) × five constant learning rates spanning the attack
space's range × {forget, the 50/50 forget/retain mix}, twice the space's
longest attack (arithmetic 1e-4 … 1e-2, 400 steps; wmdp TAR's adversary
range widened to 2e-6 … 2e-4, 1,000 steps), evaluated along the way.
"""

from __future__ import annotations

import itertools

from spaces.batteries._scale import LORA_16_32

BRUTE_FORCE = {  # setting: (learning rates, steps)
    "arithmetic": ((1e-4, 3e-4, 1e-3, 3e-3, 1e-2), 400),
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
