"""The benchmark tables of ``docs/``, generated from the committed results under ``bench/results/``.

A page holds a table as a block between two comments that name the table's kind and its file::

    <!-- table: front_check bench/results/2026-12-07-front_check-all-s012.json -->
    ...generated: the table, then the date and machine it ran on...
    <!-- end table -->

``python bench/docs_tables.py`` rewrites every block of every page from its file;
``--check`` only says which blocks differ (exit 1). ``tests/test_readme.py`` runs the check, so
a figure in a table can always be traced to a file, and a re-run's JSON changes the page only
through this script. Prose around the tables is written by hand and says which file it reads.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- table: (\w+) (\S+) -->\n)(.*?)(<!-- end table -->)", re.S)


def machine(d: dict) -> str:
    """The machine a result ran on, in words, whichever way its bench wrote it."""
    m = d.get("machine") or d.get("meta", {})
    if isinstance(m, str):
        return m.split(", Linux")[0]
    cpus, kind = m.get("cpus"), m.get("processor") or m.get("platform", "?").split("-with")[0]
    return f"{kind}, {cpus} CPUs" if cpus else str(kind or m.get("node"))


def date(d: dict) -> str:
    return d.get("date") or d.get("meta", {}).get("date", "?")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def quick_cold(d: dict) -> list[str]:
    """The quick run, cold, per seed (the ``after`` runs: the code the file names)."""
    rows = [[seed.removeprefix("seed"), f"**{minutes(r['wall_s'])}**", r["busy_cpu_s"], f"{r['pretrain_s']} s",
             f"{r['search_s']} s", f"{r['verify_s']} s ({r['models_verified']})", f"{r['verify_cost_pct']} %"]
            for seed, r in d["runs"]["after"].items()]
    return table(["seed", "wall", "busy CPU-s", "pre-training", "search", "verification (models)",
                  "verification cost"], rows)


def front_check(d: dict) -> list[str]:
    """Each front model's reported worst case against the brute-force grid's."""
    rows = [[r["experiment"], r["trial_id"], f"{r['retain_acc']:.3f}",
             f"{r['reported']:.3f} [{r['reported_lo']:.3f}, {r['reported_hi']:.3f}]",
             f"{r['search_time']:.3f}" if r.get("search_time") is not None else "",
             f"{r['grid']:.3f} ± {r['grid_half_width']:.3f}", f"{r['gap']:+.3f}",
             "yes" if r["holds"] else "**no**", f"{r['grid_multiple']:.1f}×"] for r in d["rows"]]
    held = sum(r["holds"] for r in d["rows"])
    return [*table(["experiment", "trial", "retain", "reported [95 %]", "search-time", "grid ± half-width",
                    "gap", "holds", "grid FLOPs / experiment's"], rows),
            "", f"{held} of {len(d['rows'])} hold."]


def attack_families(d: dict) -> list[str]:
    """Each defence's forget accuracy and worst case per family (V_rep, mean over seeds), and the
    cross-family search's per seed."""
    models = list(dict.fromkeys(r["model"] for r in d["rows"]))
    families = list(dict.fromkeys(f for r in d["rows"] for f in r["families"]))
    rows = []
    for m in models:
        mine = [r for r in d["rows"] if r["model"] == m]
        cells = []
        for f in families:
            reps = [r["families"][f]["rep"] for r in mine if f in r["families"]]
            cells.append(f"{sum(reps) / len(reps):.3f}" if reps else "")
        cross = ", ".join(f"{r['cross_rep']:.3f}" for r in mine if r.get("cross_rep") is not None)
        rows.append([m, f"{sum(r['forget'] for r in mine) / len(mine):.3f}", *cells, cross])
    return table(["defence", "forget", *families, "cross-family (per seed)"], rows)


def attack_overhead(d: dict) -> list[str]:
    """Run wall time and fixed cost per attack, by stage placement and resident workers."""
    where = {0: "in-process (`num_workers: 0`)", 1: "one Ray Train worker (`num_workers: 1`)"}
    rows = [[where[r["num_workers"]], "yes" if r["resident"] else "no", f"{r['wall_s']:.0f} s",
             f"{r['fixed_s_mean']:.2f} s", f"{r['fixed_s_median']:.2f} s", f"{r['fixed_s_max']:.1f} s"]
            for r in sorted(d["rows"], key=lambda r: (r["num_workers"], not r["resident"]))]
    return table(["stages", "resident attack workers", "run wall time", "fixed cost per attack: mean",
                  "median", "max"], rows)


def reverify(d: dict) -> list[str]:
    """Front models verified again by this checkout's verification attacker, against their grids."""
    rows = [[r["results"].rstrip("/").split("/")[-1], r["trial_id"], f"{r['search_time']:.3f}",
             f"{r['old_verified']:.3f}", f"{r['new_verified']:.3f}", f"{r['reported']:.3f}",
             f"{r['grid']:.3f} ± {r['grid_half_width']:.3f}", "yes" if r["holds"] else "**no**",
             f"{r['new_verify_flops']:.2e}"] for r in d["rows"]]
    held = sum(r["holds"] for r in d["rows"])
    return [*table(["experiment", "trial", "search-time", "verified before", "verified now", "reported",
                    "grid ± half-width", "holds", "verification FLOPs"], rows), "", f"{held} of {len(d['rows'])} hold."]


def hidden_loss_cost(d: dict) -> list[str]:
    """A circuit-breakers step with logits on every position against hidden states only."""
    rows = [[r["vocab"], f"{r['ms_per_step_logits_everywhere']:.1f} ms", f"{r['ms_per_step_hidden_states']:.1f} ms",
             f"{r['ratio']:.3f}"] for r in d["rows"]]
    return table(["vocabulary", "logits everywhere", "hidden states only", "ratio"], rows)


TABLES: dict[str, Callable[[dict], list[str]]] = {
    "quick_cold": quick_cold, "front_check": front_check, "attack_families": attack_families,
    "attack_overhead": attack_overhead, "hidden_loss_cost": hidden_loss_cost, "reverify": reverify,
}


def load(pattern: str) -> dict:
    """A result file, or the files a glob names as one: their rows in file order, the first's
    date and machine."""
    files = sorted(ROOT.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no result file {pattern}")
    ds = [json.loads(f.read_text()) for f in files]
    return ds[0] if len(ds) == 1 else {**ds[0], "rows": [r for d in ds for r in d["rows"]]}


def block(kind: str, file: str) -> str:
    """A block's generated body: the table, then where and when it ran."""
    if kind not in TABLES:
        raise ValueError(f"unknown table kind {kind!r} (known: {', '.join(TABLES)})")
    d = load(file)
    lines = TABLES[kind](d)
    return "\n".join([*lines, "", f"*{date(d)}, {machine(d)}; `{file}`*"]) + "\n"


def render(text: str) -> str:
    """``text`` with every block regenerated from its file."""
    return BLOCK.sub(lambda m: m.group(1) + block(m.group(2), m.group(3)) + m.group(5), text)


def pages() -> list[Path]:
    return sorted((ROOT / "docs").glob("*.md"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only say which pages differ (exit 1)")
    args = ap.parse_args()
    stale = []
    for page in pages():
        text = page.read_text()
        new = render(text)
        if new != text:
            stale.append(str(page.relative_to(ROOT)))
            if not args.check:
                page.write_text(new)
    if stale:
        print(("stale: " if args.check else "rewrote: ") + ", ".join(stale))
    sys.exit(1 if stale and args.check else 0)


if __name__ == "__main__":
    main()
