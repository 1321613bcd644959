"""The `few_shot` family's space (``trainables/families/few_shot.py``): how many solved examples
of T go before each question.

The prior: 5 examples, MMLU's standard few-shot count (Hendrycks et al. 2021; lm-evaluation-
harness's ``num_fewshot: 5``)."""

from spaces.dims import Int

SPACE = {
    "few_shot_shots": Int(1, 16, log=True),
}
PRIOR = [
    {"few_shot_shots": 5},
]
