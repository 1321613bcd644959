"""The adversary search vs. UNDO's relearning battery, at equal compute, on a panel of defenders.

For each of five defender models on the arithmetic setting — GradDiff, NPO and RMU at their
defaults, UNDO (MaxEnt teacher, α 0.6, configs/undo_arithmetic.yaml) and TAR at its defaults
(configs/tar_arithmetic.yaml) — and each seed:

* the ``undo_relearn`` battery (10 learning rates × ``--grid-steps`` steps, AdamW, the
  authors' 50/50 forget/retain mix at batch 15), its strongest (attack, checkpoint) chosen on
  V_sel and reported on V_rep over 1 + reseeds runs;
* the adversary search over the **full** attack space (LoRA, six optimizers, four schedules,
  batch, data modes, example counts), with a FLOPs budget equal to what the battery's own runs
  cost (re-runs not counted on either side), successive halving over steps, the prior as its
  informed start (no archive: each model is searched from scratch), chosen and reported the
  same way.

Prints, per (model, seed): each side's V_rep worst case (mean over seeds), its optimistic V_sel
figure, the FLOPs each spent, and the fraction of the battery's FLOPs the search had spent when
its best V_sel score reached the battery's (``flops_to_reach``: to the evaluation where it got
there); then the counts the issue asks for and the selection
bias (V_sel − V_rep) per model. ``--out FILE`` also writes the rows as JSON.

    python bench/adversary_search.py [--seeds 3] [--grid-steps 100] [--models graddiff,npo,rmu,undo,tar]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search import config  # noqa: E402
from search.adversary import adversary_search  # noqa: E402
from search.runner import Runner, run_stage  # noqa: E402
from search.trial import Context, common_spec, pretrained, suppress, method_spec  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def panel(cache: Path, runner: Runner, names: list[str], overrides: list[str] = ()) -> tuple[dict, float]:
    """The defender models (stage refs, cached) and the reference's pre-training FLOPs;
    ``overrides`` (``--set`` strings, e.g. ``model.arch=llama``) apply to every config."""
    quick = config.load(None, [f"cache_dir={cache}", *overrides])
    ctx = Context(quick, "bench", "/tmp/bench-adversary", runner)
    reference = pretrained(ctx, "reference")
    models = {}
    for name in names:
        if name in ("graddiff", "npo", "rmu"):
            models[name] = suppress(ctx, name, {}, reference)
        elif name == "undo":
            cfg = config.load(CONFIGS / "undo_arithmetic.yaml", [f"cache_dir={cache}", *overrides])
            teacher = suppress(Context(cfg, "bench", "/tmp/bench-adversary", runner), "maxent", {}, reference)
            models["undo α0.6"] = run_stage(runner, "distill", cfg.defender.undo.spec(common_spec(cfg), {"alpha": 0.6}), {"teacher": teacher})
        elif name == "tar":
            cfg = config.load(CONFIGS / "tar_arithmetic.yaml", [f"cache_dir={cache}", *overrides])
            safeguard = suppress(Context(cfg, "bench", "/tmp/bench-adversary", runner), "tar", {}, reference)
            models["tar"] = run_stage(runner, "tar", method_spec(cfg, "tar", {}),
                                      {"model": safeguard, "reference": reference})
        else:
            raise SystemExit(f"--models: unknown model {name!r}")
    return models, reference.result["flops"]


def flops_to_reach(attacks: list[dict], curves: list[dict], target: float) -> float | None:
    """Search FLOPs spent (in run order) when the best V_sel score first reached ``target``:
    the attacks before in full, the one that got there up to the evaluation where it did (its
    FLOPs are linear in its steps). None if no search attack reached it."""
    spent = 0.0
    for r in sorted((r for r in attacks if r["attack.source"] == "search"), key=lambda r: r["seq"]):
        flops, steps = r.get("flops") or 0.0, r.get("attack.steps_run") or 0
        reached = [c["step"] for c in curves if c["attack_id"] == r["attack_id"]
                   and c["metric"] == "forget_acc_sel" and c["value"] >= target]
        if reached and steps:
            return spent + flops * min(reached) / steps
        spent += flops
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--grid-steps", type=int, default=100)
    ap.add_argument("--models", default="graddiff,npo,rmu,undo,tar")
    ap.add_argument("--pruner", default="asha", choices=("none", "median", "asha"))
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    cache = Path(os.path.expanduser("~/.cache/tamper-search"))
    runner = Runner(cache, "local")
    start = time.perf_counter()
    models, ref_flops = panel(cache, runner, args.models.split(","))
    print(f"panel built in {time.perf_counter() - start:.0f} s")
    base = [f"cache_dir={cache}", "attack.reseeds=2", "attack.archive=0"]
    grid_cfg = config.load(None, [*base, "attack.budget=0", "attack.batteries=[undo_relearn]",
                                  f"attack.battery_steps={args.grid_steps}"])
    rows = []
    print("\n| model | seed | battery V_rep (sel) | search V_rep (sel) | search ≥ battery | battery FLOPs (frac) "
          "| search FLOPs / battery | search reached battery's best at | attacks (pruned) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, model in models.items():
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            grid = adversary_search(runner, grid_cfg, model, f"grid-{seed}", "bench", seed=seed, ref_flops=ref_flops)
            grid_flops = sum(r["flops"] for r in grid.attacks if r["attack.source"] == "undo_relearn")
            cfg = config.load(None, [*base, "attack.params={}", "attack.budget=null", f"attack.budget_flops={grid_flops / ref_flops}",
                                     f"attack.pruner={args.pruner}", "attack.prune_startup=2"])
            out = adversary_search(runner, cfg, model, f"search-{seed}", "bench", seed=seed, ref_flops=ref_flops)
            reach = flops_to_reach(out.attacks, out.curves, grid.attacked_sel)
            searched = [r for r in out.attacks if r["attack.source"] == "search"]
            row = {
                "model": name, "seed": seed,
                "battery_rep": grid.attacked, "battery_sel": grid.attacked_sel, "battery_flops": grid_flops,
                "search_rep": out.attacked, "search_sel": out.attacked_sel, "search_flops": out.search_flops,
                "search_seeds": out.attacked_seeds, "battery_seeds": grid.attacked_seeds,
                "reach_frac": None if reach is None else reach / grid_flops,
                "attacks": len(searched), "pruned": sum(r["status"] == "pruned" for r in searched),
                "best_attack": {k: v for k, v in next(r for r in out.attacks if r["attack_id"] == out.best_attack_id).items()
                                if k.startswith("attack.")},
                "wall_s": time.perf_counter() - t0,
            }
            rows.append(row)
            reach_text = "–" if reach is None else f"{reach / grid_flops:.2f}"
            print(f"| {name} | {seed} | {grid.attacked:.3f} ({grid.attacked_sel:.3f}) | {out.attacked:.3f} "
                  f"({out.attacked_sel:.3f}) | {'yes' if out.attacked >= grid.attacked else 'no'} | "
                  f"{grid_flops:.3g} ({grid_flops / ref_flops:.2f}) | {out.search_flops / grid_flops:.2f} | "
                  f"{reach_text} | {row['attacks']} ({row['pruned']}) |", flush=True)
    wins = sum(r["search_rep"] >= r["battery_rep"] for r in rows)
    fast = sum(r["reach_frac"] is not None and r["reach_frac"] <= 1 / 3 for r in rows)
    print(f"\nsearch V_rep ≥ battery V_rep: {wins} of {len(rows)}; search reached the battery's best V_sel "
          f"within ⅓ of its FLOPs: {fast} of {len(rows)}")
    print("\n| model | selection bias V_sel − V_rep, search (mean over seeds) | battery |")
    print("|---|---|---|")
    for name in models:
        mine = [r for r in rows if r["model"] == name]
        print(f"| {name} | {statistics.fmean(r['search_sel'] - r['search_rep'] for r in mine):+.3f} | "
              f"{statistics.fmean(r['battery_sel'] - r['battery_rep'] for r in mine):+.3f} |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
