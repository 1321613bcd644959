"""Time to build the full analysis report for a large synthetic experiment (default 2,000
defender trials × 5 attacks = 10,000 attack rows, 60,000 curve rows), against the time to
just read its three tables in the same process. Goal: the report in under 10 s.

    python bench/report.py [--trials N] [--attacks K]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.report import load, write_report  # noqa: E402
from tests.synthetic import make_experiment  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--attacks", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exp = f"{tmp}/exp"
        make_experiment(exp, args.trials, args.attacks)
        start = time.perf_counter()
        e = load(exp)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        write_report([exp], f"{tmp}/out")
        report_s = time.perf_counter() - start
    print(f"{len(e.trials)} trials, {len(e.attacks)} attack rows")
    print(f"read tables: {read_s:.2f} s   full report (plots PNG+SVG, MD, HTML): {report_s:.2f} s   "
          f"ratio {report_s / read_s:.0f}x")


if __name__ == "__main__":
    main()
