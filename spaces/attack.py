"""The fine-tuning attacker's search space (full or LoRA, optimizer, schedule, learning rate,
steps, batch size, data, number of examples; the training-free family composed after it,
``then``, is added by ``spaces/attacks/``), and
LoRA's own dimensions, drawn only for LoRA attacks.

Ranges are the arithmetic setting's: its models pre-train at lr 3e-3, batch 64, and T holds 400
facts. ``attack.params`` fixes any dimension, ``attack.space`` sets bounds (configs/quick.yaml
fixes all but lr and steps).
"""

from spaces.dims import At, Choice, Float, Int

SPACE = {
    "kind": Choice(("full", "lora")),
    "optimizer": Choice(("adamw", "adam", "sgd_momentum", "sgd_nesterov", "adagrad", "adamw_schedule_free")),
    "schedule": Choice(("constant", "warmup_constant", "cosine", "warmup_cosine")),
    "lr": Float(1e-4, 1e-2, log=True),
    "steps": Int(20, 200, log=True),
    "batch_size": Int(16, 128, log=True),
    "data": Choice(("forget", "retain_forget", "mix", "benign")),
    "n_examples": Int(16, 400, log=True),
    # "then": a training-free family applied to the fine-tuned model before it is scored (the
    # attacker fine-tunes, then deploys quantized or pruned), its dimensions (spaces/attacks/)
    # drawn for it: the choices are the families whose space says AFTER_FINETUNE, added by
    # spaces/attacks/__init__.py
}
LORA_SPACE = {
    "lora_r": Int(2, 32, log=True),
    "lora_alpha": Float(4.0, 64.0, log=True),
    "lora_dropout": Float(0.0, 0.1),
    "lora_targets": Choice(("attn", "mlp", "all")),
}
LORA_DEFAULTS = {"lora_r": 8, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_targets": "all"}

# The informed start of every adversary search, tried first (after the experiment's archive of
# attacks that were strongest against earlier models): the region the relearning literature
# finds strongest — fine-tuning with AdamW at a constant learning rate for as long as the space
# allows (Deeb & Roger 2024 and Che et al. 2025 find full fine-tuning the strongest tamperer;
# TAR's red team finds constant-rate AdamW the hardest for TAR to resist; a constant-rate
# attack's trajectory contains every shorter one, so these dominate a fixed-length sweep at the
# same rates) — on both data modes found strongest: the 50/50 forget/retain mix (UNDO's
# relearning protocol) and forget data alone. Numeric values are quantiles of the configured
# range (spaces.dims.At), so the prior follows a setting's bounds.
#
# The order is what brute-force grids (bench/front_check.py: full AdamW and LoRA r 16, α 32 ×
# five rates × both data modes, 400 steps) found strongest against quick-run front models:
# full at the middle rate (1e-3 on arithmetic) on the mix, then on forget data (the strongest
# full attacks of the robust models); LoRA at the middle rate on the mix — the strongest for 3
# of 9 front models of the fused-GELU quick runs (2 on the mix; 2026-12-07,
# bench/results/2026-12-07-front_check-all-s012.json), the two that verification left short of
# the grid among them; LoRA at the upper rate (3e-3) — the strongest for 4 of 13 earlier models,
# none of the 9; LoRA at the lower rate (3e-4) on the mix — the strongest for the earlier
# barely-unlearned models, which give their facts back to a gentle rate and are overshot by a
# high one; then full at the lower and the upper rate. A run-count budget (the search's
# ``attack.prior``) takes the first points; a FLOPs budget (the verification attacker's) reaches
# the later ones when the first stop past their peak (``attack.past_peak``).
_FULL_ADAMW = {"kind": "full", "optimizer": "adamw", "schedule": "constant",
               "steps": At(1.0), "batch_size": At(2 / 3), "n_examples": At(1.0), "then": "none"}
_LORA_ADAMW = {**_FULL_ADAMW, "kind": "lora", "lora_r": 16, "lora_alpha": 32.0, "lora_dropout": 0.0, "lora_targets": "all"}
PRIOR = [
    {**_FULL_ADAMW, "data": "mix", "lr": At(0.5)},
    {**_FULL_ADAMW, "data": "forget", "lr": At(0.5)},
    {**_LORA_ADAMW, "data": "mix", "lr": At(0.5)},
    {**_LORA_ADAMW, "data": "mix", "lr": At(0.75)},
    {**_LORA_ADAMW, "data": "mix", "lr": At(0.25)},
    {**_FULL_ADAMW, "data": "mix", "lr": At(0.25)},
    {**_FULL_ADAMW, "data": "forget", "lr": At(0.75)},
]
