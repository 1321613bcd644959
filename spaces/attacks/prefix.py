"""The `prefix` family's space (``trainables/families/prefix.py``): the prefix's length, GCG's
steps, swaps per position and candidates per step.

The prior: Zou et al.'s 20-token prefix with a quarter of their top-k (256) and an eighth of their
candidates (512), for 50 steps: a step costs 2 + candidates forward passes, and the prior should
stay within a default fine-tuning attack's compute."""

from spaces.dims import Int

SPACE = {
    "prefix_tokens": Int(4, 32, log=True),
    "prefix_steps": Int(10, 200, log=True),
    "prefix_topk": Int(8, 256, log=True),
    "prefix_candidates": Int(8, 128, log=True),
}
PRIOR = [
    {"prefix_tokens": 20, "prefix_steps": 50, "prefix_topk": 64, "prefix_candidates": 64},
]
