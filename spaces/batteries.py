"""Fixed attack batteries: the papers' hand-picked attack grids as named, reproducible lists of
points of the attack space (``spaces/attack.py``), run instead of or beside the search.

``undo_relearn``  UNDO's relearning sweep (Lee et al. 2025): AdamW, constant after one warmup
                  step, a fixed step budget, forget data, learning rates
                  {1e-3, 7e-4, 4e-4, 1e-4, 7e-5, 5e-5, 1e-5, 7e-6, 4e-6, 1e-6}.
``tar_red_team``  TAR's red-teaming grid (Tamirisa et al. 2024, ``red_teaming/``): optimizers ×
                  schedules × learning rates × full/LoRA × data (forget only; retain then
                  forget), its learning rates (2e-6 … 4e-5 on Llama-3-8B) scaled to the
                  arithmetic models' pre-training rate (×50): 2 × 2 × 3 × 2 × 2 = 48 attacks.
"""

from __future__ import annotations

import itertools

UNDO_LRS = (1e-3, 7e-4, 4e-4, 1e-4, 7e-5, 5e-5, 1e-5, 7e-6, 4e-6, 1e-6)


def undo_relearn(steps: int) -> list[dict]:
    return [
        {"kind": "full", "optimizer": "adamw", "schedule": "warmup_constant", "warmup_steps": 1,
         "lr": lr, "steps": steps, "data": "forget"}
        for lr in UNDO_LRS
    ]


def tar_red_team(steps: int) -> list[dict]:
    grid = itertools.product(("adamw", "sgd_nesterov"), ("constant", "warmup_cosine"),
                             (1e-4, 1e-3, 2e-3), ("full", "lora"), ("forget", "retain_forget"))
    return [
        {"kind": kind, "optimizer": opt, "schedule": sched, "lr": lr, "steps": steps, "data": data,
         **({"warmup_steps": max(1, steps // 10)} if sched.startswith("warmup") else {}),
         **({"lora_r": 16, "lora_alpha": 32.0, "lora_dropout": 0.0, "lora_targets": "all"} if kind == "lora" else {})}
        for opt, sched, lr, kind, data in grid
    ]


BATTERIES = {"undo_relearn": undo_relearn, "tar_red_team": tar_red_team}
