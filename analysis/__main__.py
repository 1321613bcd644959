"""``python -m analysis RESULTS [RESULTS ...] [--out DIR] [--retain-floor X] [--trial ID]``

Prints each experiment's Pareto set and writes the figures (PNG and SVG) and a Markdown and
HTML report comparing the experiments. RESULTS may be local paths or storage URIs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[1])
    p.add_argument("results", nargs="+", help="experiment results folders (paths or storage URIs)")
    p.add_argument("--out", help="where to write the report (default: the results folder, or "
                                 "./report when several or remote)")
    p.add_argument("--retain-floor", type=float, help="trials below this retain accuracy are infeasible")
    p.add_argument("--trial", help="trial whose attack curves to draw (default: the most robust)")
    args = p.parse_args(argv)
    from search.tables import TRIALS, join, resolve

    for r in args.results:
        fs, base = resolve(r)
        if fs.get_file_info(join(base, TRIALS)).type.name == "NotFound":
            print(f"error: RESULTS: no {TRIALS} in {r}", file=sys.stderr)
            return 2
    if args.retain_floor is not None and not 0 <= args.retain_floor <= 1:
        print("error: --retain-floor: must be in [0, 1]", file=sys.stderr)
        return 2
    from analysis.report import front_mask, load_trials, summary_text, write_report

    single_local = len(args.results) == 1 and "://" not in args.results[0]
    out = Path(args.out or (args.results[0] if single_local else "report"))
    for r in args.results:
        trials = load_trials(r)
        print(f"== {r}\n" + summary_text(trials, front_mask(trials, args.retain_floor)) + "\n")
    md, page = write_report(args.results, out, args.retain_floor, args.trial)
    print(f"\nReport: {md} and {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
