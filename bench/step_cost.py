"""Cost of one training step of the quick model (configs/quick.yaml's GPT-2, d 128, 2 layers) on
this machine, as it is built now against the same model with transformers' ``gelu_new``
activation (GPT-2's default, seven elementwise ops where PyTorch's tanh GELU is one kernel).

Both variants start from the same weights and train on the same batches (full AdamW, batch 64 of
the pre-training mix), alternating in blocks in one process so that drift of the machine falls on
both; prints milliseconds per step, the ratio, and the largest difference of the two activations
on the same inputs (the same formula, rounded differently).

    python bench/step_cost.py [--steps 150] [--rounds 3] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers.activations import ACT2FN  # noqa: E402

from trainables import data, models, settings  # noqa: E402


def stepper(model: torch.nn.Module, setting, d, seed: int):
    """One full-AdamW step of ``model`` per call, on its own seeded batch stream."""
    gen = data.sampler(seed, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    params = list(model.parameters())
    model.train()

    def step() -> None:
        batch = data.mix(d.retain_train, d.forget_all, 64, 0.5, gen)
        opt.zero_grad(set_to_none=True)
        setting.answer_loss(model(input_ids=batch).logits, batch).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=3, help="blocks per variant, alternating")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a trial's share of 2 cores: 1)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    setting, d = settings.load({"name": "arithmetic"})
    cfg = models.ModelConfig(arch="gpt2", d_model=128, n_layer=2, n_head=4)
    now = models.build_model(cfg, setting.vocab_size(d), d.seq_len)
    before = copy.deepcopy(now)
    for block in before.transformer.h:
        block.mlp.act = ACT2FN["gelu_new"]
    x = torch.randn(64 * 11, 512) * 3
    act_diff = float((now.transformer.h[0].mlp.act(x) - before.transformer.h[0].mlp.act(x)).abs().max())

    steps = {"now": stepper(now, setting, d, 0), "gelu_new": stepper(before, setting, d, 0)}
    for step in steps.values():  # warm-up
        for _ in range(20):
            step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    ms = {k: min(v) for k, v in times.items()}  # the least disturbed block of each
    ratio = ms["now"] / ms["gelu_new"]
    print(f"ms per step: now {ms['now']:.1f}, gelu_new {ms['gelu_new']:.1f}; ratio {ratio:.3f} "
          f"(blocks: {times}); largest activation difference {act_diff:.2e}")
    if args.out:
        args.out.write_text(json.dumps({
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "command": " ".join(["python", "bench/step_cost.py", *sys.argv[1:]]),
            "threads": args.threads, "steps_per_block": args.steps, "ms_per_step": ms,
            "blocks_ms": times, "ratio_now_to_gelu_new": ratio, "max_activation_diff": act_diff,
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
