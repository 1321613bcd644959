"""Can attacks on the arithmetic setting be batched into populations? The upper bound, measured.

One attack step (forward, backward, clipping, AdamW) of P full fine-tunes run as one batched
computation — the P parameter copies stacked, ``torch.func.functional_call`` under ``vmap``,
clipping and AdamW written over the stacked tensors with per-member learning rates — against
the same step of one model run P times, in one process. Members of a population do the same
FLOPs as sequential attacks; a population is faster only where the sequential step leaves the
cores idle (per-op overhead, small kernels). The figure is member-steps per second, population
over sequential: the most a population attack stage could gain (it ignores evaluation, which
batches the same way, and stage overheads, which are small: ``bench/overhead.py``).

    python bench/attack_population.py [--threads 2] [--steps 20]

Issue 20 (population attacks) asks for ≥ 3× at P = 8; this measures whether that is reachable.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.func import functional_call, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainables import arithmetic as A  # noqa: E402
from trainables.models import ModelConfig, build_model  # noqa: E402

MODELS = {  # the quick experiment's model, and the test suite's tiny one
    "quick (d 128, 2 layers)": ModelConfig(arch="gpt2", d_model=128, n_layer=2, n_head=4),
    "tiny (d 32, 1 layer)": ModelConfig(arch="gpt2", d_model=32, n_layer=1, n_head=2),
}


def sequential(model: torch.nn.Module, batches: torch.Tensor, steps: int) -> float:
    """Seconds per member-step: each member's step run on its own, one after another."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    P = batches.shape[0]
    start = time.perf_counter()
    for _ in range(steps):
        for i in range(P):
            loss = A.answer_loss(model(input_ids=batches[i]).logits, batches[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    return (time.perf_counter() - start) / (steps * P)


def population(model: torch.nn.Module, batches: torch.Tensor, steps: int) -> float:
    """Seconds per member-step: P members in one batched step (stacked AdamW, per-member lr
    and clipping, torch's formulas)."""
    P = batches.shape[0]
    params = {k: v.detach().expand(P, *v.shape).clone().requires_grad_(True) for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    s = {k: torch.zeros_like(v) for k, v in params.items()}
    lr = torch.logspace(-4, -2, P)  # every member its own learning rate
    b1, b2, eps = 0.9, 0.999, 1e-8

    def losses(p, x):
        return A.answer_loss(functional_call(model, (p, buffers), (), {"input_ids": x}).logits, x)

    start = time.perf_counter()
    for t in range(1, steps + 1):
        vmap(losses)(params, batches).sum().backward()
        with torch.no_grad():
            grads = {k: v.grad for k, v in params.items()}
            norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads.values()], 1)
            coef = (1.0 / (torch.linalg.vector_norm(norms, dim=1) + 1e-6)).clamp(max=1.0)
            for k, p in params.items():
                shape = (P,) + (1,) * (p.dim() - 1)
                g = grads[k] * coef.view(shape)
                m[k].lerp_(g, 1 - b1)
                s[k].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (s[k] / (1 - b2 ** t)).sqrt_().add_(eps)
                p.sub_((lr / (1 - b1 ** t)).view(shape) * m[k] / denom)
                p.grad = None
    return (time.perf_counter() - start) / (steps * P)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, batch {args.batch} × {A.SEQ_LEN} tokens, {args.steps} steps per member")
    print("| model | P | sequential ms / member-step | population ms / member-step | speed-up |\n|---|---|---|---|---|")
    for name, cfg in MODELS.items():
        model = build_model(cfg, len(A.VOCAB), A.SEQ_LEN)
        model.config._attn_implementation = "eager"  # SDPA has no vmap batching rule on the CPU
        for P in (1, 4, 8, 16):
            batches = torch.randint(len(A.VOCAB), (P, args.batch, A.SEQ_LEN), generator=torch.Generator().manual_seed(P))
            sequential(model, batches, 2), population(model, batches, 2)  # warm-up
            seq, pop = sequential(model, batches, args.steps), population(model, batches, args.steps)
            print(f"| {name} | {P} | {seq * 1e3:.2f} | {pop * 1e3:.2f} | {seq / pop:.2f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
