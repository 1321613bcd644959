"""Attack family `finetune`: the relearning / tampering fine-tune of ``trainables/attack.py``
(full or LoRA, any optimizer and schedule, forget / mix / retain-then-forget / benign data);
its space is ``spaces/attack.py``."""

from trainables.attack import Spec, memory_work, run  # noqa: F401  (the family's contract)

CITATION = ("Deeb & Roger 2024 (relearning on held-out facts); Che et al. 2025 (full and LoRA "
             "fine-tuning attacks); Qi et al. 2024 (durability of safeguards)")
STAGE = "attack"
SEEDED = True
