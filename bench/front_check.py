"""Is the reported front honest? Re-attack every front model of an experiment with a brute-force
grid and compare its worst case with the one the experiment reported.

For each results folder given, the front is read from ``trials.parquet`` as the report draws it
(ok, feasible defender trials, non-dominated in retain_acc ↑ and forget_acc_attacked ↓). Each
front model (its released model, from the stage cache by ``model_key``) is attacked by the
``brute_force`` battery (``spaces/batteries/brute_force.py``: full AdamW and LoRA at 13 learning rates
on arithmetic × forget and 50/50 forget/retain data × twice the attack space's longest attack, evaluated every
``attack.loop.eval_every`` steps), with seeds of its own (derived from the model, not the
experiment, so two experiments that share a model share its grid through the stage cache). The
grid's strongest (attack, checkpoint) is chosen on V_sel and reported on V_rep as the mean over
1 + ``--reseeds`` runs, exactly as the adversary search reports.

Prints, per front model: the reported worst case and its 95 % interval, the grid's, the gap
(grid − reported), whether the reported figure is at least the grid's minus the grid figure's
95 % half-width (``holds``), and the grid's compute as a multiple of everything the
experiment spent attacking that model (``flops.attack``: search, re-runs and verification).
``--out FILE`` writes the rows as JSON (commit it under ``bench/results/``).

    python bench/front_check.py RESULTS_DIR [RESULTS_DIR ...] [--reseeds 2] [--steps N] [--lowest K] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.report import front_mask, load_trials  # noqa: E402
from search import config, tables  # noqa: E402
from search.adversary import adversary_search, seed_of  # noqa: E402
from search.runner import Runner, cached  # noqa: E402
from trainables import heldout  # noqa: E402


def experiment_config(results: str, overrides: list[str]) -> config.ExperimentConfig:
    """The experiment's own config (``config.yaml`` beside its tables), with ``overrides``."""
    text = tables.read_text(results, tables.CONFIG)
    if text is None:
        raise SystemExit(f"{results}: no {tables.CONFIG}")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        return config.load(f.name, overrides)
    finally:
        os.unlink(f.name)


def half_width(value: float, n: int) -> float:
    lo, hi = heldout.wilson(value, n)
    return (hi - lo) / 2


def experiment_summary(results: str) -> dict:
    """The experiment's attack compute and what verification did (zeros before verification)."""
    from analysis.report import _records
    from search import verify

    trials = load_trials(results)
    total = float(trials["flops.attack"].fillna(0).sum())
    spent = float(trials["verify_flops"].fillna(0).sum()) if "verify_flops" in trials else 0.0
    out = {"results": results, "attack_flops": total, "verify_flops": spent,
           "verify_share_of_search": spent / (total - spent) if total > spent else None,
           "front": sorted(trials.loc[front_mask(trials), "trial_id"])}
    if "verified" in trials:
        out["verification"] = verify.summary(_records(trials, None))
    return out


def check(results: str, reseeds: int, steps: int | None, lowest: int | None = None,
          only: list[str] | None = None) -> list[dict]:
    """One row per front model of the experiment at ``results`` (with ``lowest``, only that
    many of them: those reported safest, the front's headline; with ``only``, those trials)."""
    trials = load_trials(results)
    front = trials[front_mask(trials)].sort_values("forget_acc_attacked")
    if lowest:
        front = front.head(lowest)
    if only:
        front = front[front["trial_id"].isin(only)]
    # the grid runs every attack to its end (no past_peak stop): it is the reference
    overrides = ["attack.budget=0", "attack.batteries=[brute_force]", f"attack.reseeds={reseeds}", "attack.archive=0",
                 "attack.past_peak=null"]
    if steps:
        overrides.append(f"attack.battery_steps={steps}")
    cfg = experiment_config(results, overrides)
    runner = Runner(Path(os.path.expanduser(cfg.cache_dir)), "local")
    ref_flops = float(trials["flops.pretrain"].dropna().iloc[0])
    rows = []
    for _, t in front.iterrows():
        key = t["model_key"]
        model = cached(runner, key)
        if model is None:
            raise SystemExit(f"{results}: trial {t['trial_id']}'s model {key} is not in the cache {cfg.cache_dir}")
        start = time.perf_counter()
        grid = adversary_search(runner, cfg, model, f"check-{t['trial_id']}", "front_check",
                                seed=seed_of("front_check", key), ref_flops=ref_flops)
        n = int(t["n_report"])
        reported = float(t["forget_acc_attacked"])
        grid_half = half_width(grid.attacked, n)
        row = {
            "experiment": str(t["experiment"]), "results": results, "trial_id": str(t["trial_id"]),
            "method": str(t["method"]), "model_key": key, "retain_acc": float(t["retain_acc"]),
            "reported": reported, "reported_lo": float(t["forget_acc_attacked_lo"]),
            "reported_hi": float(t["forget_acc_attacked_hi"]),
            "verified": bool(t["verified"]) if "verified" in t and t["verified"] == t["verified"] else None,
            "search_time": (float(t["forget_acc_attacked_search"]) if "forget_acc_attacked_search" in t
                            else reported),
            "grid": grid.attacked, "grid_sel": grid.attacked_sel, "grid_seeds": grid.attacked_seeds,
            "grid_half_width": grid_half, "gap": grid.attacked - reported,
            "holds": reported >= grid.attacked - grid_half,
            "grid_best": next({k: v for k, v in r.items() if k.startswith("attack.")}
                              for r in grid.attacks if r["attack_id"] == grid.best_attack_id),
            "grid_best_step": grid.best_step,
            "grid_flops": grid.flops, "experiment_attack_flops": float(t["flops.attack"]),
            "grid_multiple": grid.flops / float(t["flops.attack"]), "n_report": n,
            "wall_s": time.perf_counter() - start,
        }
        rows.append(row)
        print(f"| {row['experiment']} | {row['trial_id']} | {row['retain_acc']:.3f} | {reported:.3f} "
              f"[{row['reported_lo']:.3f}, {row['reported_hi']:.3f}] | {grid.attacked:.3f} ± {grid_half:.3f} "
              f"| {row['gap']:+.3f} | {'yes' if row['holds'] else 'NO'} | {row['grid_multiple']:.1f}× |", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="experiment results folders")
    ap.add_argument("--reseeds", type=int, default=2, help="re-runs of the grid's strongest attack (default 2)")
    ap.add_argument("--steps", type=int, help="the grid's attack length (default: the battery's, 400 on arithmetic)")
    ap.add_argument("--lowest", type=int, help="check only this many front models per experiment, the lowest "
                                               "reported attacked score first (default: all)")
    ap.add_argument("--trials", help="check only these front trials (comma-separated ids)")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    start = time.perf_counter()
    print("| experiment | trial | retain | reported [95 %] | brute-force grid ± half-width | gap | holds | "
          "grid FLOPs / experiment's |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [r for results in args.results for r in check(results, args.reseeds, args.steps, args.lowest,
                                                           args.trials.split(",") if args.trials else None)]
    held = sum(r["holds"] for r in rows)
    print(f"\nholds (reported ≥ grid − half-width) for {held} of {len(rows)} front models; "
          f"total {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": {"node": platform.node(), "cpus": os.cpu_count(),
                                                          "processor": platform.processor() or platform.machine()},
            "command": " ".join(sys.argv), "rows": rows, "held": held, "models": len(rows),
            "experiments": [experiment_summary(r) for r in args.results],
        }, indent=1, default=float))


if __name__ == "__main__":
    main()
