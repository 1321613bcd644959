"""The attacker's search space (issue: full or LoRA, optimizer, schedule, learning rate, steps,
batch size, data, number of examples), and LoRA's own dimensions, drawn only for LoRA attacks.

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
# finds strongest — full fine-tuning with AdamW at a constant learning rate for as long as the
# space allows (Deeb & Roger 2024 and Che et al. 2025 find full fine-tuning the strongest
# tamperer; TAR's red team finds constant-rate AdamW the hardest for TAR to resist; a
# constant-rate attack's trajectory contains every shorter one, so these dominate a fixed-length
# sweep at the same rates) — on both data modes found strongest: the 50/50 forget/retain mix
# (UNDO's relearning protocol; the strongest attack of a brute-force grid for 5 of 8 quick-config
# models) and forget data alone (the other 3), alternating, at the middle, lower and upper part
# of the rate range: the middle (1e-3 on arithmetic) is UNDO's highest relearning rate, where
# its sweep peaks, and the grid's strongest for 5 of 8 models; a model that was barely unlearned
# gives its facts back to a gentle rate and is overshot by a high one (a verification of the
# quick run missed one so: 0.74 at 1e-3 and above, 0.94 by the grid at 1e-4), so the lower rate
# comes before the upper. Numeric values are quantiles of the configured range
# (spaces.dims.At), so the prior follows a setting's bounds.
_FULL_ADAMW = {"kind": "full", "optimizer": "adamw", "schedule": "constant",
               "steps": At(1.0), "batch_size": At(2 / 3), "n_examples": At(1.0)}
PRIOR = [{**_FULL_ADAMW, "data": data, "lr": At(q)} for q in (0.5, 0.25, 0.75) for data in ("mix", "forget")]
