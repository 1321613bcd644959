"""The `soft_prompt` family's space (``trainables/families/soft_prompt.py``): how many soft
tokens, Adam's rate and steps.

The prior: TamperBench's embedding attack (20 soft tokens, lr 1e-3) run for the space's longest
attack (TamperBench runs 100 steps)."""

from spaces.dims import Float, Int

SPACE = {
    "soft_prompt_tokens": Int(1, 32, log=True),
    "soft_prompt_lr": Float(1e-4, 1e-1, log=True),
    "soft_prompt_steps": Int(20, 200, log=True),
}
PRIOR = [
    {"soft_prompt_tokens": 20, "soft_prompt_lr": 1e-3, "soft_prompt_steps": 200},
]
