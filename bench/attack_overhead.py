"""Fixed cost per attack: the quick config with 2 defender trials and 3 searched attacks each
(plus the baselines, priors and re-runs), run by ``search/run.py`` four ways — stages in-process
(``scaling.num_workers: 0``) or in one Ray Train worker (``1``), each with resident attack
workers (``scaling.resident_attacks``, the default) and without (a load, and with a worker a
worker-group start, per attack).

Every run starts from its own fresh stage cache holding only the pre-trained models, so each
trains, unlearns and attacks the same things; Ray is started by each run (counted in its wall
time). Per run: wall time, attacks run, and an attack's fixed cost — its wall time minus its
training loop's (``wall_s − train_wall_s`` in ``attacks.parquet``: load or restore, worker start,
cache) — mean and median. The attacks tables of the four runs are compared (same seeds: same
attacks, same scores?).

    python bench/attack_overhead.py [--trials 2] [--budget 3] [--modes 0:on 0:off 1:on 1:off] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402

from search import config  # noqa: E402
from search.runner import Runner  # noqa: E402
from search.trial import Context, pretrained  # noqa: E402

SCORES = ("forget_acc_sel_max", "forget_acc_rep_at_best", "best_step", "retain_acc_final")


def sets(trials: int, budget: int) -> list[str]:
    return [f"search.trials={trials}", f"attack.budget={budget}", "verify.enabled=false"]


def run(mode: str, work: Path, seed_cache: Path, trials: int, budget: int) -> dict:
    workers, resident = mode.split(":")
    cache = work / f"cache-{workers}-{resident}"
    shutil.copytree(seed_cache, cache)
    overrides = [*sets(trials, budget), f"scaling.num_workers={workers}",
                 f"scaling.resident_attacks={'true' if resident == 'on' else 'false'}", f"cache_dir={cache}"]
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--config", str(ROOT / "configs" / "quick.yaml"),
           "--storage", str(work / "results"), "--name", f"w{workers}-{resident}",
           *[a for o in overrides for a in ("--set", o)]]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"{mode} failed:\n{out.stderr[-3000:]}")
    exp = work / "results" / f"w{workers}-{resident}"
    attacks = pq.read_table(exp / "attacks.parquet").to_pylist()
    # Tune's trial ids differ from run to run: an attack is named by the model it attacked (its
    # stage-cache key) and its id after the trial's
    model_of = {t["trial_id"]: t["model_key"] for t in pq.read_table(exp / "trials.parquet").to_pylist()}
    fixed = [a["wall_s"] - a["train_wall_s"] for a in attacks if a["status"] != "error" and a["train_wall_s"] is not None]
    return {
        "mode": mode, "num_workers": int(workers), "resident": resident == "on", "wall_s": wall,
        "attacks": len(attacks), "attack_wall_s_mean": statistics.mean(a["wall_s"] for a in attacks),
        "fixed_s_mean": statistics.mean(fixed), "fixed_s_median": statistics.median(fixed),
        "fixed_s_max": max(fixed), "table": sorted(
            (model_of.get(a["trial_id"]) or a["trial_id"], a["attack_id"][len(a["trial_id"]):], *(a[k] for k in SCORES))
            for a in attacks),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--budget", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["0:on", "0:off", "1:on", "1:off"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="attack-overhead-"))
    seed_cache = work / "seed-cache"
    cfg = config.load(str(ROOT / "configs" / "quick.yaml"), [*sets(args.trials, args.budget), f"cache_dir={seed_cache}"])
    ctx = Context(cfg, "seed", str(work / "seed"), Runner(seed_cache, "local"))
    t0 = time.perf_counter()
    for kind in cfg.baseline_kinds:
        pretrained(ctx, kind)
    print(f"pre-trained the seed cache in {time.perf_counter() - t0:.0f} s; work folder {work}", flush=True)
    rows = []
    print("| stages | resident attacks | wall s | attacks | attack wall s (mean) | fixed s: mean | median | max |\n"
          "|---|---|---|---|---|---|---|---|", flush=True)
    for mode in args.modes:
        r = run(mode, work, seed_cache, args.trials, args.budget)
        rows.append(r)
        where = "in-process" if r["num_workers"] == 0 else f"{r['num_workers']} Ray Train worker"
        print(f"| {where} | {'yes' if r['resident'] else 'no'} | {r['wall_s']:.0f} | {r['attacks']} | "
              f"{r['attack_wall_s_mean']:.2f} | {r['fixed_s_mean']:.2f} | {r['fixed_s_median']:.2f} | "
              f"{r['fixed_s_max']:.2f} |", flush=True)
    base = rows[0]
    for r in rows[1:]:
        same = r["table"] == base["table"]
        print(f"{r['mode']} vs {base['mode']}: wall ratio {r['wall_s'] / base['wall_s']:.2f}; attacks tables "
              f"{'identical' if same else 'DIFFER'}")
        r["wall_ratio_to_first"], r["table_identical_to_first"] = r["wall_s"] / base["wall_s"], same
    if args.json:
        meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.node(), "cpus": os.cpu_count(),
                "processor": platform.processor() or platform.machine(), "trials": args.trials, "budget": args.budget}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
