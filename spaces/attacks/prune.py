"""The `prune` family's space (``trainables/families/prune.py``).

The prior: Łucki et al.'s forget-vs-retain importance on MLP neurons at a small sparsity (the
suppression of an unlearned model lives in few units), then Wanda at a sparsity a deployer
would use for speed."""

from spaces.dims import Choice, Float

AFTER_FINETUNE = 2  # a `then:` choice of the fine-tune, the second after none (spaces/attacks/)
SPACE = {
    "prune_score": Choice(("magnitude", "wanda", "importance")),
    "prune_structure": Choice(("unstructured", "neuron")),
    "prune_sparsity": Float(0.005, 0.5, log=True),
}
PRIOR = [
    {"prune_score": "importance", "prune_structure": "neuron", "prune_sparsity": 0.02},
    {"prune_score": "wanda", "prune_structure": "unstructured", "prune_sparsity": 0.2},
]
