"""``undo_relearn``: UNDO's relearning sweep (Lee et al. 2025, "Distillation Robustifies
Unlearning"; the authors' ``run_relearn_arithmetic.py`` and
``run_relearn_wmdp.py``): AdamW, one warm-up step, then the learning rate held
(their cosine schedule decays to a floor equal to the rate itself), gradient
clipping 1.0, no weight decay, 500 steps on a 50/50 mix of forget and retain
data (``data: mix``, ``retain_fraction`` 0.5), per setting:

===========  ==============================================  =====  =================
setting      learning rates                                  batch  evaluated at
===========  ==============================================  =====  =================
arithmetic   1e-3, 7e-4, 4e-4, 1e-4, 7e-5, 5e-5, 1e-5, 7e-6,     15  every 5 steps
             4e-6, 1e-6
wmdp         2.15e-5, 1e-5, 4.62e-6                             20  10, 25, 50, 150, 500
===========  ==============================================  =====  =================

Departures: the arithmetic paper relearns on its pre-training mix (English 75 %,
all arithmetic 25 %); this setting has no English, so the mix is its forget
and retain facts 50/50 (its own pre-training mix). The forget half is the
attacker's T, never V: on wmdp that is T's questions (``setting.attack_data:
questions``) or the forget corpus (``corpus``, the paper's data). The paper
runs 4 seeds of every point; here each point runs once and the strongest
is re-run ``attack.reseeds`` times.
"""

from __future__ import annotations

UNDO_STEPS = 500
UNDO_RELEARN = {  # setting: (learning rates, batch size, evaluation)
    "arithmetic": ((1e-3, 7e-4, 4e-4, 1e-4, 7e-5, 5e-5, 1e-5, 7e-6, 4e-6, 1e-6), 15, {"eval_every": 5}),
    "wmdp": ((2.15e-5, 1e-5, 4.62e-6), 20, {"eval_at": [10, 25, 50, 150, 500]}),
}
UNDO_LRS = UNDO_RELEARN["arithmetic"][0]


def battery(steps: int | None, setting: str) -> list[dict]:
    """The points on ``setting``, each ``steps`` long (None: the paper's)."""
    lrs, batch, evaluation = UNDO_RELEARN[setting]
    steps = steps or UNDO_STEPS
    if "eval_at" in evaluation:
        evaluation = {"eval_at": [s for s in evaluation["eval_at"] if s <= steps]}
    return [
        {"kind": "full", "optimizer": "adamw", "schedule": "warmup_constant", "warmup_steps": 1,
         "lr": lr, "steps": steps, "batch_size": batch, "data": "mix", "retain_fraction": 0.5,
         "n_examples": None, **evaluation}
        for lr in lrs
    ]
