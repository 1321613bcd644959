"""Cost of one circuit-breakers step (a loss on hidden states only) with the vocabulary projection
on every position, as before, against ``trainables/methods/_shared.hidden_states`` (the head on
the last position only), on the quick model's arithmetic vocabulary and on a Llama-3-sized one.

The model is a small Llama (d 128, 2 layers: the quick model's size) with the given vocabulary;
both variants compute the same loss (checked equal) on the same batches, alternating in blocks in
one process so that drift of the machine falls on both. Prints milliseconds per step (forward of
the trained and the frozen model, backward) and the ratio new / old.

    python bench/hidden_loss_cost.py [--vocabs 15,128256] [--steps 20] [--rounds 3] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from trainables.settings import arithmetic  # noqa: E402
from trainables.methods import circuit_breakers as cb  # noqa: E402
from trainables.methods._shared import frozen_copy  # noqa: E402


def full_forward_hidden(model, tokens, setting):
    """The hidden states as the method read them before: from a forward with logits everywhere."""
    states = model(input_ids=tokens, output_hidden_states=True).hidden_states[1:]
    return [setting.answer_logits(h).float() for h in states]


def timed(model, frozen, batches, hidden_fn, steps: int) -> tuple[float, float]:
    """(ms per step, last loss) of ``steps`` loss + backward passes with ``hidden_fn`` as cb.hidden."""
    original = cb.hidden
    cb.hidden = hidden_fn
    try:
        start = time.perf_counter()
        for i in range(steps):
            f, r = batches[i % len(batches)]
            value = cb.loss(model, f, r, cb.Params(), arithmetic, frozen, step=steps // 2, steps=steps)
            value.backward()
            model.zero_grad(set_to_none=True)
        return 1e3 * (time.perf_counter() - start) / steps, float(value)
    finally:
        cb.hidden = original


def measure(vocab: int, steps: int, rounds: int) -> dict:
    cfg = AutoConfig.for_model("llama", vocab_size=vocab, hidden_size=128, intermediate_size=512,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                               max_position_embeddings=32)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    frozen = frozen_copy(model)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 15, (64, 12), generator=g), torch.randint(0, 15, (64, 12), generator=g)) for _ in range(4)]
    old, new = [], []
    timed(model, frozen, batches, cb.hidden, 2)  # warm-up
    for _ in range(rounds):
        ms, loss_old = timed(model, frozen, batches, full_forward_hidden, steps)
        old.append(ms)
        ms, loss_new = timed(model, frozen, batches, cb.hidden, steps)
        new.append(ms)
    assert loss_old == loss_new, (loss_old, loss_new)
    return {"vocab": vocab, "ms_per_step_logits_everywhere": min(old), "ms_per_step_hidden_states": min(new),
            "ratio": min(new) / min(old), "rounds": rounds, "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocabs", default="15,128256")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(int(v), args.steps, args.rounds) for v in args.vocabs.split(",")]
    for r in rows:
        print(f"vocab {r['vocab']:>7}: {r['ms_per_step_logits_everywhere']:8.1f} ms → "
              f"{r['ms_per_step_hidden_states']:8.1f} ms per step (×{r['ratio']:.3f})")
    if args.out:
        meta = {"date": time.strftime("%Y-%m-%d"), "machine": {"node": platform.node(), "cpus": os.cpu_count(),
                "processor": platform.processor() or platform.machine()}, "threads": args.threads,
                "torch": torch.__version__, "command": " ".join(sys.argv)}
        Path(args.out).write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
