"""Synthetic experiments in the project's table format, for analysis tests and benchmarks."""

from __future__ import annotations

import numpy as np

from search import tables
from trainables import heldout


def make_experiment(exp_dir: str, n_trials: int, attacks_per_trial: int, seed: int = 0,
                    name: str = "synthetic", failed: int = 1, verified: bool = False) -> None:
    """Write parts and tables of a fake experiment: defenders, two baselines, attacks, curves;
    with ``verified``, every second defender verified (its search-time score lower)."""
    rng = np.random.default_rng(seed)
    parts = {}
    ids = [f"t{i:05d}" for i in range(n_trials)] + ["pure", "reference"]
    for i, tid in enumerate(ids):
        kind = "baseline" if tid in ("pure", "reference") else "defender"
        method = tid if kind == "baseline" else ("graddiff" if i % 2 else "maxent")
        if kind == "defender" and i < failed:
            parts[tid] = {"trials": [{"experiment": name, "trial_id": tid, "kind": kind, "method": method,
                                      "status": "error", "error": "RuntimeError: boom\nTraceback ...",
                                      "finished_at": float(i)}]}
            continue
        attacks, curves = [], []
        for a in range(attacks_per_trial):
            aid = f"{tid}-a{a}"
            steps = np.arange(0, 101, 20)
            vals = np.clip(rng.random() * steps / 100 + rng.normal(0, 0.02, len(steps)), 0, 1)
            sel = np.clip(vals + rng.normal(0, 0.02, len(steps)), 0, 1)
            attacks.append({"experiment": name, "trial_id": tid, "attack_id": aid, "status": "ok", "seq": a,
                            "forget_acc_max": float(vals.max()), "forget_acc_final": float(vals[-1]),
                            "forget_acc_sel_max": float(sel.max()), "best_step": int(steps[sel.argmax()]),
                            "forget_acc_rep_at_best": float(vals[sel.argmax()]),
                            "retain_acc_final": float(rng.random()), "attack.lr": float(10 ** rng.uniform(-4, -2)),
                            "attack.steps": 100, "flops": 1e9, "wall_s": 1.0})
            curves += [{"experiment": name, "trial_id": tid, "attack_id": aid, "stage": "attack",
                        "step": int(s), "metric": m, "value": float(v)}
                       for m, series in (("forget_acc_rep", vals), ("forget_acc_sel", sel)) for s, v in zip(steps, series)]
        best = max(attacks, key=lambda r: r["forget_acc_sel_max"])
        attacked = best["forget_acc_rep_at_best"]
        lo, hi = heldout.wilson(attacked, 200)
        parts[tid] = {"trials": [{
            "experiment": name, "trial_id": tid, "kind": kind, "method": method, "status": "ok",
            "retain_acc": float(rng.random()), "forget_acc": float(rng.random() * 0.2),
            "forget_acc_attacked": attacked, "forget_acc_attacked_lo": lo, "forget_acc_attacked_hi": hi,
            "forget_acc_attacked_sel": best["forget_acc_sel_max"], "attacked_seeds": 1,
            "best_attack_id": best["attack_id"], "best_attack_step": best["best_step"],
            "attacks_run": attacks_per_trial, "compute_frac": float(10 ** rng.uniform(-2, 0)) if tid != "reference" else 0.0,
            "finished_at": float(i), "param.lr": float(10 ** rng.uniform(-4, -2)),
        }], "attacks": attacks, "curves": curves}
    for i, (tid, rows) in enumerate(parts.items()):
        row = rows["trials"][0]
        if verified and row["kind"] == "defender" and row["status"] == "ok":
            search = row["forget_acc_attacked"] * (1 - float(rng.random()) * 0.5 * (i % 2))
            row.update({"verified": bool(i % 2), "attacked_by": "verify" if i % 2 else "search",
                        "forget_acc_attacked_search": search, "verify_flops": 1e9 if i % 2 else 0.0,
                        "forget_acc_attacked_verified": row["forget_acc_attacked"] if i % 2 else None})
        tables.write_part(exp_dir, tid, rows)
    tables.write_tables(exp_dir, tables.read_parts(exp_dir))
    tables.write_text(exp_dir, tables.CONFIG, f"experiment: {name}\nseed: {seed}\n")
