"""Re-run this checkout's verification attacker against front models of an earlier experiment,
from the stage cache, and compare with what that experiment's own verification found — and,
where ``bench/front_check.py`` checked the model (``--checks``), with the brute-force grid.

A change to the verification attacker (its prior, its stop rule, its budget) is judged on the
same models and the same search-time figures as before, without re-running the search: each
model's search-time worst case stands, the new verification attacker runs with the experiment's
config plus ``--set`` overrides (e.g. the current ``configs/quick.yaml``'s ``verify`` values),
and the reported worst case is the stronger of the two, as ``search/verify.py`` reports it.

    python bench/reverify.py RESULTS_DIR TRIAL_ID [TRIAL_ID ...] [--set KEY=VALUE ...]
        [--checks CHECK.json ...] [--out FILE]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from front_check import experiment_config  # noqa: E402

from search import tables, verify  # noqa: E402
from search.adversary import adversary_search, seed_of  # noqa: E402
from search.runner import Runner, cached  # noqa: E402


def reverify(results: str, trial_id: str, overrides: list[str]) -> dict:
    """One front model of ``results`` attacked by this checkout's verification attacker."""
    cfg = experiment_config(results, overrides)
    part = tables.read_part(results, trial_id)
    row = part["trials"][0]
    ref_flops = row["flops.attack"] / row["compute_frac_attack"]
    runner = Runner(os.path.expanduser(cfg.cache_dir), executor="local")
    released = cached(runner, row["model_key"])
    if released is None:
        raise SystemExit(f"{results}: trial {trial_id}'s model {row['model_key']} is not in the cache {cfg.cache_dir}")
    base = verify._search_flops(part["attacks"])
    vcfg = cfg.model_copy(update={"attack": verify.attacker(cfg, base, ref_flops)})
    start = time.perf_counter()
    out = adversary_search(runner, vcfg, released, trial_id, "reverify", None,
                           seed=seed_of(cfg.seed, "verify", released.key), ref_flops=ref_flops, exp_dir=None,
                           role="verify")
    search_time = row.get("forget_acc_attacked_search", row["forget_acc_attacked"])
    return {
        "results": results, "trial_id": trial_id, "overrides": overrides, "retain_acc": row["retain_acc"],
        "search_time": search_time, "old_verified": row.get("forget_acc_attacked_verified"),
        "old_verify_flops": row.get("verify_flops"), "new_verified": out.attacked, "new_seeds": out.attacked_seeds,
        "reported": max(search_time, out.attacked), "new_verify_flops": out.flops, "search_flops": base,
        "wall_s": time.perf_counter() - start,
        "attacks": [{k: a.get(k) for k in ("attack.source", "attack.kind", "attack.lr", "attack.data", "attack.steps",
                                           "attack.steps_run", "best_step", "forget_acc_sel_max", "forget_acc_rep_at_best")}
                    for a in out.attacks],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("trials", nargs="+")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override, KEY=VALUE")
    ap.add_argument("--checks", nargs="*", default=[], help="front_check.py JSON files with these models' grids")
    ap.add_argument("--out")
    args = ap.parse_args()
    grid = {r["trial_id"]: r for f in args.checks for r in json.loads(Path(f).read_text())["rows"]}
    rows = []
    for t in args.trials:
        r = reverify(args.results, t, args.overrides)
        g = grid.get(t)
        if g:
            r.update(grid=g["grid"], grid_half_width=g["grid_half_width"],
                     holds=r["reported"] >= g["grid"] - g["grid_half_width"])
        rows.append(r)
        print(f"{t}: search-time {r['search_time']:.3f}, verified before {r['old_verified']:.3f}, now "
              f"{r['new_verified']:.3f} → reported {r['reported']:.3f}"
              + (f"; grid {g['grid']:.3f} ± {g['grid_half_width']:.3f} ({'holds' if r['holds'] else 'FAILS'})" if g else "")
              + f"; verification FLOPs {r['new_verify_flops']:.3g} (before {r['old_verify_flops']:.3g})", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "command": " ".join(sys.argv), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
