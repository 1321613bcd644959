"""``tar_red_team``: a grid in the spirit of TAR's red team (Tamirisa et al. 2024; the authors'
``red_teaming/red_teaming_evaluation.py``: batch 8, 1,000 steps, LoRA r 16
α 32, retain-then-forget at 40 % of the steps), **not** the paper's list of
26–28 named adversaries (not reproduced yet): {AdamW, SGD-Nesterov} ×
{constant, warm-up + cosine} × three learning rates × {full, LoRA r 16} ×
{forget, retain then forget} = 48 attacks. Rates per setting: wmdp TAR's
adversary rates {2e-6, 2e-5, 4e-5}, 1,000 steps; arithmetic the same × 50
(the arithmetic models pre-train at 3e-3, 50 × the rates real models are
fine-tuned at), 100 steps.
"""

from __future__ import annotations

import itertools

from spaces.batteries._scale import LORA_16_32, rate

TAR_LRS = (2e-6, 2e-5, 4e-5)  # TAR's adversary rates on Llama-3-8B (run_tar_bio.sh)
TAR_RED_TEAM = {"wmdp": (TAR_LRS, 1000), "arithmetic": (tuple(rate(lr, "arithmetic") for lr in TAR_LRS), 100)}


def battery(steps: int | None, setting: str) -> list[dict]:
    """The points on ``setting``, each ``steps`` long (None: the paper's)."""
    lrs, paper_steps = TAR_RED_TEAM[setting]
    steps = steps or paper_steps
    grid = itertools.product(("adamw", "sgd_nesterov"), ("constant", "warmup_cosine"),
                             lrs, ("full", "lora"), ("forget", "retain_forget"))
    return [
        {"kind": kind, "optimizer": opt, "schedule": sched, "lr": lr, "steps": steps, "data": data,
         **({"warmup_steps": max(1, steps // 10)} if sched.startswith("warmup") else {}),
         **(LORA_16_32 if kind == "lora" else {})}
        for opt, sched, lr, kind, data in grid
    ]
