"""Adversary search vs. UNDO's relearning grid, on a GradDiff-suppressed arithmetic model.

Runs the ``undo_relearn`` battery (10 learning rates, AdamW, a fixed step budget) and the
adversary search (seeded TPE, as many runs as the grid) against the same model, for several
search seeds, and reports (a) the best V accuracy each reaches, (b) how many runs the search
needs to reach 95 % of the grid's best, (c) the compute each spends (FLOPs, and as a fraction of
the reference's pre-training). Three search spaces: ``lr+steps`` (full AdamW on forget data, the
grid's own family), ``lr, 200 steps`` (the same at the space's longest attack) and ``full``
(every dimension of spaces/attack.py).

    python bench/adversary_search.py [--seeds 3] [--grid-steps 100] [--budget 10]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search import config  # noqa: E402
from search.adversary import adversary_search  # noqa: E402
from search.stages import Runner  # noqa: E402
from search.trial import Context, pretrain, suppress  # noqa: E402

GRID_FAMILY = "kind: full, optimizer: adamw, schedule: constant, batch_size: 64, data: forget, n_examples: null"
SPACES = {
    "lr+steps": [f"attack.params={{{GRID_FAMILY}}}"],
    # the objective is the best score along the trajectory, so at one lr a longer constant-lr
    # attack is never weaker: fix steps at the space's maximum and search the lr alone
    "lr, 200 steps": [f"attack.params={{{GRID_FAMILY}, steps: 200}}"],
    "full": ["attack.params={}"],
}


def runs_to(values: list[float], target: float) -> int | None:
    """1-based index of the first run whose score reaches ``target`` (None if none does)."""
    return next((i + 1 for i, v in enumerate(values) if v >= target), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--grid-steps", type=int, default=100)
    ap.add_argument("--budget", type=int, default=10)
    args = ap.parse_args()
    cache = Path(os.path.expanduser("~/.cache/tamper-search"))
    base = config.load(None, [f"cache_dir={cache}"])
    runner = Runner(cache, "local")
    ctx = Context(base, "bench", "/tmp/bench-adversary", runner)
    reference = pretrain(ctx, "reference")
    model = suppress(ctx, "graddiff", {}, reference)
    ref_flops = reference.result["flops"]
    m = model.result["metrics"]
    print(f"GradDiff-suppressed model (defaults): retain {m['retain_acc']:.3f}, V {m['forget_acc']:.3f}")

    grid_cfg = config.load(None, [f"cache_dir={cache}", "attack.budget=0", "attack.batteries=[undo_relearn]",
                                  f"attack.battery_steps={args.grid_steps}"])
    grid = adversary_search(runner, grid_cfg, model, "grid", "bench")
    grid_best = grid.best
    print(f"\nundo_relearn grid: {len(grid.attacks)} runs × {args.grid_steps} steps, best V {grid_best:.3f} "
          f"({grid.best_attack_id}), compute {grid.flops:.3g} FLOPs = {grid.flops / ref_flops:.3f} of pre-training")
    print("\n| search space | seed | best V in the grid's run count | runs to 95 % of grid best | runs to beat grid | compute (FLOPs, frac) |")
    print("|---|---|---|---|---|---|")
    for name, overrides in SPACES.items():
        cfg = config.load(None, [f"cache_dir={cache}", f"attack.budget={args.budget}", *overrides])
        for seed in range(args.seeds):
            out = adversary_search(runner, cfg, model, f"search-{seed}", "bench", seed=seed)
            values = [a.get("forget_acc_max", float("nan")) for a in out.attacks]
            r95 = runs_to(values, 0.95 * grid_best)
            beat = next((i + 1 for i, v in enumerate(values) if v > grid_best), None)
            print(f"| {name} | {seed} | {max(values):.3f} | {r95 or '–'} | {beat or '–'} | "
                  f"{out.flops:.3g}, {out.flops / ref_flops:.3f} |", flush=True)


if __name__ == "__main__":
    main()
