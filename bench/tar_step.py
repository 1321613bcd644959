"""Cost of one TAR outer step relative to plain fine-tuning.

One outer step (``trainables/tar.py``: K adversary steps, L_TR every ``subsample`` steps, the
snapshot and restore, the retain loss with the reference model's hidden states, the outer
update) against K + 1 plain fine-tuning steps (next-token loss, AdamW) of the same model and
batch size, both through the project's training loop in this process. Prints the ratio (goal
≤ 1.3) for each K; with tasks_per_step = T an outer step runs T adversaries and is compared
with T·K + 1 plain steps.

    python bench/tar_step.py [--d-model 128] [--layers 2] [--batch 64] [--k 16 64] [--reps 3]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from trainables.settings import arithmetic as A  # noqa: E402
from trainables import data, loop, models, tar  # noqa: E402


def _model(args):
    cfg = models.ModelConfig(d_model=args.d_model, n_layer=args.layers, n_head=4)
    return models.build_model(cfg, len(A.VOCAB), A.SEQ_LEN).to(loop.device())


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_tar(args, k: int, steps: int) -> float:
    """Seconds per outer step, over ``steps`` outer steps (after one warm-up step)."""
    d = A.build(A.Config())
    model, reference = _model(args), _model(args).eval()
    for q in reference.parameters():
        q.requires_grad_(False)
    adversary, meta = tar.split_forget(d.forget_all, 0)
    pools = {"adversary": adversary, "meta": meta, "retain": d.retain_train}
    p = tar.Params(inner_steps=k, subsample=args.subsample, tasks_per_step=args.tasks, adversary_batch_size=args.batch)
    trained = list(model.parameters())
    fn = tar.outer_loss_fn(p, A, pools, reference, trained, args.batch, random.Random(0), torch.Generator().manual_seed(0))
    loop.train(model, fn, loop.LoopConfig(steps=1, batch_size=args.batch))  # warm-up
    _sync()
    _, wall = loop.train(model, fn, loop.LoopConfig(steps=steps, batch_size=args.batch))
    _sync()
    return wall / steps


def time_plain(args, n_steps: int) -> float:
    """Seconds for ``n_steps`` plain fine-tuning steps on forget data."""
    d = A.build(A.Config())
    model = _model(args)
    gen = torch.Generator().manual_seed(0)

    def fn(net, step):
        batch = data.draw(d.forget_T, args.batch, gen)
        return A.answer_loss(net(input_ids=batch).logits, batch)

    loop.train(model, fn, loop.LoopConfig(steps=1, batch_size=args.batch))
    _sync()
    _, wall = loop.train(model, fn, loop.LoopConfig(steps=n_steps, batch_size=args.batch))
    _sync()
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--k", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--subsample", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=1)
    ap.add_argument("--outer-steps", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    dev = loop.device()
    print(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
          f"d_model {args.d_model}, {args.layers} layers, batch {args.batch}, subsample {args.subsample}, "
          f"{args.tasks} task(s) per step")
    print("| K | outer step (s) | T·K + 1 plain steps (s) | ratio |")
    print("|---|---|---|---|")
    for k in args.k:
        tar_s = min(time_tar(args, k, args.outer_steps) for _ in range(args.reps))
        n = args.tasks * k + 1
        plain_s = min(time_plain(args, n * args.outer_steps) / args.outer_steps for _ in range(args.reps))
        print(f"| {k} | {tar_s:.3f} | {plain_s:.3f} | {tar_s / plain_s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
