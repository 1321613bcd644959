"""The tables at scale: a synthetic experiment of 10,000 trials × 50 attacks × 20 curve points per
attack (10 M curve rows), written trial by trial through the project's own writers as the driver
writes them: each trial's part (``tables.write_part``, what a trial does), then the driver's
bookkeeping (``tables.merge``), timed per trial. Then, on the finished experiment:

* reading the three tables (``tables.read_table``, pandas-ready Arrow), with strings as plain
  strings and dictionary-encoded (``dictionary=True``), each in a fresh process;
* ``python -m analysis`` (the report: plots, Markdown, HTML), in a fresh process;
* a resume in a fresh process (``tables.catch_up``: what a new driver reads before it runs), its
  peak memory.

Figures are ratios and seconds on this machine. The bookkeeping of the last 100 trials is
compared with that of the first 100 (the issue's bar: ≤ 2×).

    .venv/bin/python bench/tables_scale.py [--trials 10000 --attacks 50 --points 20] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search import tables  # noqa: E402
from trainables import heldout  # noqa: E402


def part(i: int, tid: str, attacks: int, points: int, rng: np.random.Generator, kind: str = "defender") -> dict:
    """One trial's rows, shaped as a real trial's (the columns the report reads)."""
    steps = np.linspace(0, 200, points).astype(int)
    att, cur = [], []
    for a in range(attacks):
        aid = f"{tid}-a{a}"
        rep = np.clip(rng.random() * steps / 200 + rng.normal(0, 0.02, points), 0, 1)
        sel = np.clip(rep + rng.normal(0, 0.02, points), 0, 1)
        att.append({"experiment": "scale", "trial_id": tid, "attack_id": aid, "status": "ok", "seq": a,
                    "forget_acc_max": float(rep.max()), "forget_acc_final": float(rep[-1]),
                    "forget_acc_sel_max": float(sel.max()), "best_step": int(steps[sel.argmax()]),
                    "forget_acc_rep_at_best": float(rep[sel.argmax()]), "retain_acc_final": float(rng.random()),
                    "attack.lr": float(10 ** rng.uniform(-4, -2)), "attack.steps": 200, "attack.family": "finetune",
                    "attack.role": "search", "attack.source": "search", "flops": 1e9, "wall_s": 1.0})
        cur += [{"experiment": "scale", "trial_id": tid, "attack_id": aid, "stage": "attack", "step": int(s),
                 "metric": "forget_acc_sel", "value": float(v)} for s, v in zip(steps, sel)]
    best = max(att, key=lambda r: r["forget_acc_sel_max"])
    lo, hi = heldout.wilson(best["forget_acc_rep_at_best"], 200)
    row = {"experiment": "scale", "trial_id": tid, "kind": kind, "method": "graddiff" if kind == "defender" else tid,
           "status": "ok", "retain_acc": float(rng.random()), "forget_acc": float(rng.random() * 0.2),
           "forget_acc_attacked": best["forget_acc_rep_at_best"], "forget_acc_attacked_lo": lo,
           "forget_acc_attacked_hi": hi, "forget_acc_attacked_sel": best["forget_acc_sel_max"], "attacked_seeds": 1,
           "best_attack_id": best["attack_id"], "best_attack_step": best["best_step"], "attacks_run": attacks,
           "compute_frac": float(10 ** rng.uniform(-2, 0)), "feasible": True, "finished_at": float(i),
           "param.lr": float(10 ** rng.uniform(-4, -2)), "param.steps": int(rng.integers(20, 200)),
           "param.lam": float(rng.uniform(0.3, 10))}
    return {"trials": [row], "attacks": att, "curves": cur}


def in_fresh_process(code: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in a new Python process; its JSON, with
    the process's peak memory."""
    wrapped = f"{code}\nimport resource, json as _j\nprint(_j.dumps({{**out, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))"
    done = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10_000)
    p.add_argument("--attacks", type=int, default=50)
    p.add_argument("--points", type=int, default=20)
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        exp = f"{tmp}/scale"
        for i, tid in enumerate(["pure", "reference"]):
            tables.write_part(exp, tid, part(i, tid, args.attacks, args.points, rng, "baseline"))
            tables.merge(exp, [tid])
        merge_s = []
        start = time.perf_counter()
        for i in range(args.trials):
            tid = f"t{i:06d}"
            tables.write_part(exp, tid, part(i, tid, args.attacks, args.points, rng))
            t = time.perf_counter()
            tables.merge(exp, [tid])
            merge_s.append(time.perf_counter() - t)
            if (i + 1) % 1000 == 0:
                print(f"{i + 1} trials, {time.perf_counter() - start:.0f} s; last 100 merges "
                      f"{1e3 * np.mean(merge_s[-100:]):.1f} ms each", flush=True)
        total = time.perf_counter() - start
        first, last = np.array(merge_s[:100]), np.array(merge_s[-100:])
        read = in_fresh_process(f"""
import time; from search import tables
t = time.perf_counter()
n = {{name: tables.read_table({exp!r}, name).num_rows for name in (tables.TRIALS, tables.ATTACKS, tables.CURVES)}}
out = {{"read_s": time.perf_counter() - t, "rows": n}}""")
        coded = in_fresh_process(f"""
import time; from search import tables
t = time.perf_counter()
n = {{name: tables.read_table({exp!r}, name, dictionary=True).num_rows for name in (tables.TRIALS, tables.ATTACKS, tables.CURVES)}}
out = {{"read_s": time.perf_counter() - t}}""")
        t = time.perf_counter()
        report = subprocess.run([sys.executable, "-m", "analysis", exp, "--out", f"{tmp}/report"], cwd=ROOT,
                                capture_output=True, text=True)
        report_s = time.perf_counter() - t
        assert report.returncode == 0, report.stderr[-2000:]
        resume = in_fresh_process(f"""
import time; from search import tables
t = time.perf_counter()
todo = tables.catch_up({exp!r})
out = {{"resume_s": time.perf_counter() - t, "merged_on_resume": len(todo)}}""")
        files = {name: len(list(Path(exp, name).glob("*.parquet"))) for name in (tables.TRIALS, tables.ATTACKS, tables.CURVES)}
    figures = {
        "trials": args.trials, "attacks_per_trial": args.attacks, "points_per_attack": args.points,
        "rows": read["rows"], "files": files, "write_all_s": total,
        "merge_ms_first100_mean": 1e3 * first.mean(), "merge_ms_last100_mean": 1e3 * last.mean(),
        "merge_ratio_last_to_first": last.mean() / first.mean(),
        "merge_ms_median": 1e3 * float(np.median(merge_s)), "merge_ms_p99": 1e3 * float(np.percentile(merge_s, 99)),
        "merge_ms_max": 1e3 * max(merge_s), "read_tables_s": read["read_s"], "read_peak_rss_mb": read["peak_rss_mb"],
        "read_tables_dictionary_s": coded["read_s"], "read_dictionary_peak_rss_mb": coded["peak_rss_mb"],
        "report_s": report_s, "resume_s": resume["resume_s"], "resume_peak_rss_mb": resume["peak_rss_mb"],
    }
    print(json.dumps(figures, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "command": " ".join(sys.argv), **figures}, indent=1))


if __name__ == "__main__":
    main()
