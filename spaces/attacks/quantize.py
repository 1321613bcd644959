"""The `quantize` family's space (``trainables/families/quantize.py``): a deployer's choices.

The prior is what Zhang et al. (ICLR 2025) find recovers unlearned knowledge: 4-bit round-to-
nearest at GPTQ/AWQ's usual group of 128, QLoRA's NF4 at its block of 64, and 8-bit per channel
(the precision that mostly does not)."""

from spaces.dims import Choice, Int

AFTER_FINETUNE = 1  # a `then:` choice of the fine-tune, the first after none (spaces/attacks/)
SPACE = {
    "quantize_scheme": Choice(("sym", "asym", "nf4")),
    "quantize_bits": Int(2, 8),
    "quantize_group": Choice((0, 32, 64, 128)),
}
PRIOR = [
    {"quantize_scheme": "sym", "quantize_bits": 4, "quantize_group": 128},
    {"quantize_scheme": "nf4", "quantize_bits": 4, "quantize_group": 64},
    {"quantize_scheme": "asym", "quantize_bits": 8, "quantize_group": 0},
]
