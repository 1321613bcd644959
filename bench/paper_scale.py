"""Paper-scale rehearsal: peak GPU memory and tokens/s of every stage at the papers' model
sizes, batch sizes and sequence lengths, on random weights with the real architectures' shapes
(``trainables/architectures.py``): nothing is downloaded.

Each row runs a few steps of one stage through the project's own code — the method's loss and
setup (RMU's frozen copy, UNDO's corrupted student beside its frozen teacher, TAR's outer step
with its inner adversary and reference model, LoRA through peft) and ``trainables.loop.train``
— in bf16, with gradient checkpointing as the paper configs set it, and records
``torch.cuda.max_memory_allocated`` and tokens/s (steps after the first). A row that runs out
of memory is retried at half the batch, down to 1; every attempt is recorded, so a row says
either what its paper setting needs or that it does not fit and the smallest batch that does.
These peaks calibrate the memory estimate of ``--plan`` (``trainables/memory.py``).

    python bench/paper_scale.py [--rows NAME ...] [--steps 4] [--json FILE]
    python bench/paper_scale.py --smoke      # tiny shapes on the CPU: checks the code path only

Without a GPU (and without --smoke) it says so and measures nothing.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainables import architectures, lora, loop, memory, models, tar, undo  # noqa: E402
from trainables.settings import wmdp  # noqa: E402
from trainables.loop import LoopConfig  # noqa: E402
from trainables.methods import rmu  # noqa: E402

# name: (architecture, stage, batch, sequence length, gradient checkpointing). Batches and
# lengths are the repository's paper configs' (configs/wmdp_zephyr_rmu.yaml, tar_llama3_8b.yaml,
# wmdp_gemma2_2b_undo.yaml); the rows most likely to run out of memory come last.
ROWS = {
    "rmu mistral-7b": ("mistral-7b", "rmu", 4, 512, True),
    "lora attack mistral-7b": ("mistral-7b", "lora", 8, 512, True),
    "full attack mistral-7b": ("mistral-7b", "full", 8, 512, True),
    "full attack gemma-2-2b": ("gemma-2-2b", "full", 8, 512, True),
    "full attack gemma-2-2b, no checkpointing": ("gemma-2-2b", "full", 8, 512, False),
    "lora attack gemma-2-2b": ("gemma-2-2b", "lora", 8, 512, True),
    "distill gemma-2-2b": ("gemma-2-2b", "distill", 16, 512, True),
    "tar gemma-2-2b": ("gemma-2-2b", "tar", 8, 256, True),
    "lora attack llama-3-8b": ("llama-3-8b", "lora", 8, 256, True),
    "full attack llama-3-8b": ("llama-3-8b", "full", 8, 256, True),
    "lora attack gemma-2-9b": ("gemma-2-9b", "lora", 8, 512, True),
    "full attack gemma-2-9b": ("gemma-2-9b", "full", 8, 512, True),
    "distill mistral-7b": ("mistral-7b", "distill", 16, 512, True),
    "tar llama-3-8b": ("llama-3-8b", "tar", 8, 256, True),
}
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.0, "targets": "all"}  # Che et al.'s and Qi et al.'s rank
TAR_INNER_STEPS = 4  # memory does not grow with K (one adversary's state at a time); time does


def tokens(vocab: int, batch: int, seq: int, n: int, gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randint(vocab, (batch, seq), generator=gen).to(loop.device()) for _ in range(n)]


def run_stage(model, stage: str, batch: int, seq: int, steps: int, tick) -> tuple[int, int]:
    """Run ``steps`` steps of ``stage`` on ``model`` (changed in place). Returns (trained
    parameters, tokens trained per step)."""
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    if stage == "rmu":
        p = rmu.Params(layer=7, c=6.5, alpha=1200.0)
        state = rmu.setup(model, p, 0)
        forget, retain = tokens(vocab, batch, seq, steps, gen), tokens(vocab, batch, seq, steps, gen)
        trained = rmu.trainable(model, p)

        def loss_fn(net, step):
            tick(step)
            return rmu.loss(net, forget[step], retain[step], p, wmdp, state)

        loop.train(model, loss_fn, LoopConfig(steps=steps, lr=5e-5, batch_size=batch), params=trained)
        return sum(q.numel() for q in trained), 2 * batch * seq
    if stage in ("full", "lora"):
        net = lora.add_lora(model, **LORA) if stage == "lora" else model
        data = tokens(vocab, batch, seq, steps, gen)

        def loss_fn(m, step):
            tick(step)
            return wmdp.answer_loss(m(input_ids=data[step]).logits, data[step])

        loop.train(net, loss_fn, LoopConfig(steps=steps, lr=2e-5, batch_size=batch))
        return sum(q.numel() for q in net.parameters() if q.requires_grad), batch * seq
    if stage == "distill":
        teacher = models.freeze(model)
        student = undo.student(teacher, "corrupt", 0.25, 0.0, 0)
        data = tokens(vocab, batch, seq, steps, gen)

        def loss_fn(m, step):
            tick(step)
            with torch.no_grad():
                t = wmdp.answer_logits(teacher(input_ids=data[step]).logits)
            return undo.distill_loss(wmdp.answer_logits(m(input_ids=data[step]).logits), t)

        loop.train(student, loss_fn, LoopConfig(steps=steps, lr=2e-5, batch_size=batch))
        return sum(q.numel() for q in student.parameters()), batch * seq
    if stage == "tar":
        p = tar.Params(inner_steps=TAR_INNER_STEPS, subsample=4, grad_scale=4.0, lam=0.0625,
                       adversary_lrs=[2e-6, 2e-5, 4e-5], adversary_batch_size=batch // 2 or 1)
        reference = models.freeze(copy.deepcopy(model))
        pools = {k: torch.randint(vocab, (64, seq), generator=gen) for k in ("adversary", "meta", "retain")}
        trained = [q for q in model.parameters() if q.requires_grad]
        inner = tar.outer_loss_fn(p, wmdp, pools, reference, trained, batch, random.Random(0), gen)

        def loss_fn(net, step):
            tick(step)
            return inner(net, step)

        cfg = LoopConfig(steps=steps, lr=2e-5, batch_size=batch, optimizer="adamw_schedule_free",
                         schedule="warmup_constant", warmup_steps=32, grad_clip=None)
        loop.train(model, loss_fn, cfg, params=trained)
        spec_like = type("S", (), {"params": p.model_dump(), "loop": cfg})
        return sum(q.numel() for q in trained), tar.step_sequences(spec_like)[0] * seq
    raise ValueError(f"unknown stage {stage!r}")


def estimated_peak(model, stage: str, batch: int, seq: int, gc_on: bool, dtype: str) -> float:
    """``trainables/memory.py``'s peak for this row (what --plan prints), before the row runs."""
    d = memory.dims(model.config, sum(q.numel() for q in model.parameters()))
    n = d.n_params
    if stage == "rmu":
        p = rmu.Params(layer=7, c=6.5, alpha=1200.0)
        work = memory.Work(trained=sum(q.numel() for q in rmu.trainable(model, p)), sequences=2 * batch,
                           checkpointing=gc_on, **rmu.memory(model, p))
    elif stage == "lora":
        adapters = sum(LORA["r"] * sum(model.get_submodule(m).weight.shape) for m in lora.target_modules(model, LORA["targets"]))
        work = memory.Work(trained=adapters, trained_bytes=4, sequences=batch, checkpointing=gc_on, lora_r=LORA["r"])
    elif stage == "distill":
        work = memory.Work(trained=n, frozen_copies=1, sequences=batch, loss="distill", checkpointing=gc_on)
    elif stage == "tar":
        work = memory.Work(trained=n, frozen_copies=1, extra_trained_copies=3, optimizer="adamw_schedule_free",
                           sequences=batch, checkpointing=gc_on)
    else:
        work = memory.Work(trained=n, sequences=batch, checkpointing=gc_on)
    return memory.estimate(d, work, seq, dtype)["peak"]


def build(arch: str, gc_on: bool, smoke: bool) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    cfg = architectures.config(arch)
    if smoke:  # the same architecture at toy width and depth
        cfg.update(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=8, vocab_size=512))
        if getattr(cfg, "head_dim", None):
            cfg.update(dict(head_dim=16, query_pre_attn_scalar=16))
        cfg.update(dict(num_attention_heads=4, num_key_value_heads=2))
    dtype = torch.float32 if smoke else torch.bfloat16
    torch.manual_seed(0)
    with loop.device():  # initialise on the device: a 7B model's initialisation takes minutes on a CPU
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return models._runtime(model, gc_on)


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def attempt(name: str, arch: str, stage: str, batch: int, seq: int, gc_on: bool, steps: int, smoke: bool) -> dict:
    """One try of a row at ``batch``: its peak memory and tokens/s, or the out-of-memory error."""
    cuda = torch.cuda.is_available()
    row = {"row": name, "arch": arch, "stage": stage, "batch": batch, "seq": seq,
           "gradient_checkpointing": gc_on, "steps": steps}
    marks: list[float] = []

    def tick(step: int) -> None:
        if step >= 1:  # the first step allocates optimizer state and warms kernels: not timed
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    model = None
    try:
        free()
        model = build(arch, gc_on, smoke)
        row["params"] = sum(q.numel() for q in model.parameters())
        row["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
        row["estimated_peak_bytes"] = estimated_peak(model, stage, batch, seq, gc_on, "float32" if smoke else "bfloat16")
        if cuda:
            torch.cuda.synchronize()
            row["weights_bytes"] = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        trained, per_step = run_stage(model, stage, batch, seq, steps, tick)
        if cuda:
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        row.update(status="ok", trained_params=trained, tokens_per_step=per_step,
                   seconds_per_step=(marks[-1] - marks[0]) / max(1, len(marks) - 1))
        row["tokens_s"] = per_step / row["seconds_per_step"]
    except torch.OutOfMemoryError as e:
        row.update(status="oom", error=str(e).split("\n")[0][:300])
    finally:
        if cuda:
            row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
            row["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        del model
        free()
    return row


def restore_cost(arch: str, smoke: bool) -> dict:
    """Seconds to put a released model's weights back after an attack changed them (what a
    resident attack worker pays per attack instead of a load): from a copy on the same GPU, and
    from a pinned copy in host memory."""
    model = build(arch, False, smoke)
    params = list(model.parameters())
    out = {"arch": arch, "bytes": sum(q.numel() * q.element_size() for q in params)}
    cuda = torch.cuda.is_available()
    for where in ("gpu", "pinned_cpu"):
        keep = [q.detach().clone() if where == "gpu" else q.detach().to("cpu").pin_memory() if cuda
                else q.detach().clone() for q in params]
        times = []
        for _ in range(3):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                for q, k in zip(params, keep):
                    q.copy_(k, non_blocking=True)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[f"from_{where}_s"] = min(times)
        del keep
        free()
    del model, params
    free()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", nargs="*", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--smoke", action="store_true", help="toy shapes on the CPU (code path only)")
    ap.add_argument("--json", type=Path, help="write the rows here, after every row")
    ap.add_argument("--restore", default="mistral-7b", help="architecture of the restore-cost row ('' for none)")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        print("no GPU on this machine: nothing measured (run on a GPU, or --smoke for the code path)")
        return 0
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    total = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
    import transformers

    meta = {"device": name, "device_memory_bytes": total, "torch": torch.__version__,
            "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
            "tar_inner_steps": TAR_INNER_STEPS, "lora": LORA, "dtype": "float32" if args.smoke else "bfloat16"}
    rows = []
    if args.restore:
        meta["restore"] = restore_cost(args.restore, args.smoke)
        print("restore:", meta["restore"], flush=True)
    print(f"{name}: {len(args.rows)} rows\n| row | batch × seq | peak GiB | estimate GiB | estimate / peak | tokens/s | status |\n"
          "|---|---|---|---|---|---|---|")
    for row_name in args.rows:
        arch, stage, batch, seq, gc_on = ROWS[row_name]
        b = batch
        while True:
            got = attempt(row_name, arch, stage, b, seq, gc_on, args.steps, args.smoke)
            got["paper_batch"] = batch
            rows.append(got)
            peak, est = got.get("peak_allocated_bytes"), got.get("estimated_peak_bytes")
            ratio = f"{est / peak:.3f}" if peak and est and got["status"] == "ok" else "–"
            print(f"| {row_name} | {b} × {seq} | {peak / 2**30 if peak else float('nan'):.1f} | "
                  f"{est / 2**30 if est else float('nan'):.1f} | {ratio} | "
                  f"{got.get('tokens_s', float('nan')):,.0f} | {got['status']} |", flush=True)
            if args.json:
                args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
            if got["status"] == "ok" or b == 1:
                break
            b //= 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
