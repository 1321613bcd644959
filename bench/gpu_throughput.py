"""Tokens/s and model FLOPs utilisation of the attack step and the distillation step of a
~0.5–1B Llama-style model in bf16: through the project's stage loop (``trainables.loop.train``
with the stages' own loss functions) vs. a plain PyTorch loop doing the same work on the same
GPU, in one process; and the stage loop with ``scaling.strategy: fsdp`` (FSDP2 on a one-rank
group: its wrapping and gathers without any split). Goal: the stage loop reaches ≥ 0.95 of the
plain loop's tokens/s.

    python bench/gpu_throughput.py [--size 0.5b|1b] [--steps 30] [--warmup 5] [--batch 8] [--seq 1024] [--json FILE]
    python bench/gpu_throughput.py --smoke      # a tiny model on the CPU: checks the code path only

Without a GPU (and without --smoke) it says so and measures nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainables import loop, undo  # noqa: E402
from trainables.settings import wmdp  # noqa: E402
from trainables.loop import LoopConfig  # noqa: E402

SIZES = {  # Llama-style: (hidden, layers, heads, intermediate); vocab 32k
    "0.5b": (1024, 24, 16, 2816),
    "1b": (2048, 16, 16, 5632),
    "smoke": (64, 2, 4, 176),
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def build(size: str, dtype: torch.dtype, seq: int, dev: torch.device) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    hidden, layers, heads, inter = SIZES[size]
    cfg = AutoConfig.for_model("llama", hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                               num_key_value_heads=heads, intermediate_size=inter,
                               vocab_size=32000 if size != "smoke" else 512, max_position_embeddings=seq)
    torch.manual_seed(0)
    with dev:  # initialise on the device: a 1B model's initialisation takes tens of seconds on a CPU
        return AutoModelForCausalLM.from_config(cfg).to(dtype)


class Clock:
    """Wall time from the start of step ``warmup`` to the end of the last step. The GPU is
    synchronised only at those two points, so a path that synchronises every step (a ``.item()``
    on the loss) pays for it here."""

    def __init__(self, warmup: int, dev: torch.device):
        self.warmup, self.dev, self.marks, self.steps = warmup, dev, [], 0

    def tick(self, step: int | None = None) -> None:
        """Call with the step index before each step, and once without after the last."""
        if step is not None:
            self.steps = step + 1
            if step != self.warmup:
                return
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        self.marks.append(time.perf_counter())

    def seconds_per_step(self) -> float:
        return (self.marks[-1] - self.marks[0]) / (self.steps - self.warmup)


def plain(model, teacher, batches, kind: str, lr: float, clock: Clock) -> None:
    """The reference: AdamW, clipping, the same loss, nothing else."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    for step, batch in enumerate(batches):
        clock.tick(step)
        logits = model(input_ids=batch).logits
        if kind == "attack":
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())
        else:
            with torch.no_grad():
                t = teacher(input_ids=batch).logits
            loss = undo.distill_loss(logits[:, :-1], t[:, :-1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    clock.tick()


def stage_loop(model, teacher, batches, kind: str, lr: float, clock: Clock) -> None:
    """The project's path: ``loop.train`` with the attack stage's loss (the setting's
    ``answer_loss``) or the distill stage's (``undo.distill_loss`` on ``answer_logits``)."""
    def loss_fn(net, step):
        clock.tick(step)
        batch = batches[step]
        logits = net(input_ids=batch).logits
        if kind == "attack":
            return wmdp.answer_loss(logits, batch)
        with torch.no_grad():
            t = wmdp.answer_logits(teacher(input_ids=batch).logits)
        return undo.distill_loss(wmdp.answer_logits(logits), t)

    loop.train(model, loss_fn, LoopConfig(steps=len(batches), lr=lr, batch_size=len(batches[0]), grad_clip=1.0))
    clock.tick()


def fsdp_stage_loop(model, teacher, batches, kind: str, lr: float, clock: Clock) -> None:
    """``stage_loop`` with the strategy a Ray Train worker sets from ``scaling.strategy: fsdp``."""
    loop.set_strategy("fsdp")
    try:
        stage_loop(model, teacher, batches, kind, lr, clock)
    finally:
        loop.set_strategy("ddp")


def one_rank_group(dev: torch.device) -> None:
    """A one-process torch.distributed group (NCCL on a GPU, gloo on the CPU), as Ray Train
    makes for each stage; FSDP needs one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(s.getsockname()[1]))
    if dev.type == "cuda":
        torch.distributed.init_process_group("nccl", rank=0, world_size=1, device_id=dev)
    else:
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=[s for s in SIZES if s != "smoke"], default="0.5b")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU (code path only)")
    ap.add_argument("--json", type=Path, help="also write the rows here (bench/gpu_check.sh reads them)")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        print("no GPU on this machine: nothing measured (run on a GPU, or --smoke for the code path)")
        return 0
    size, dtype = ("smoke", torch.float32) if args.smoke else (args.size, torch.bfloat16)
    seq, batch, steps = (32, 4, 6) if args.smoke else (args.seq, args.batch, args.steps)
    warmup = 2 if args.smoke else args.warmup
    dev = loop.device()
    base = build(size, dtype, seq, dev)
    n = sum(p.numel() for p in base.parameters())
    gen = torch.Generator().manual_seed(0)
    vocab = base.config.vocab_size
    batches = [torch.randint(vocab, (batch, seq), generator=gen).to(dev) for _ in range(steps)]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    print(f"{name}: Llama-style {n / 1e9:.2f} B parameters, {str(dtype).split('.')[-1]}, batch {batch} × {seq} tokens, "
          f"{steps} steps ({warmup} warm-up)")
    teacher = copy.deepcopy(base).eval().requires_grad_(False)
    one_rank_group(dev)
    rows = []
    print("| step | path | tokens/s | MFU | ratio to plain |\n|---|---|---|---|---|")
    for kind in ("attack", "distill"):
        flops_per_token = 6 * n + (2 * n if kind == "distill" else 0)
        rates = {}
        for path, fn in (("plain PyTorch", plain), ("stage loop", stage_loop), ("stage loop, FSDP", fsdp_stage_loop)):
            model = copy.deepcopy(base).train().requires_grad_(True)
            clock = Clock(warmup, dev)
            fn(model, teacher if kind == "distill" else None, batches, kind, 1e-5, clock)
            rates[path] = batch * seq / clock.seconds_per_step()
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            mfu = rates[path] * flops_per_token / peak if peak else None
            ratio = rates[path] / rates["plain PyTorch"]
            rows.append({"step": kind, "path": path, "tokens_s": rates[path], "mfu": mfu, "ratio": ratio,
                         "device": name, "params": n, "dtype": str(dtype).split(".")[-1], "batch": batch, "seq": seq})
            print(f"| {kind} | {path} | {rates[path]:,.0f} | {f'{mfu:.1%}' if mfu else '–'} | {ratio:.3f} |")
    torch.distributed.destroy_process_group()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
