"""``python -m analysis RESULTS [--out DIR]``: print the Pareto set and write pareto.png."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.report import summarize  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    p.add_argument("results", help="an experiment's results folder (path or storage URI)")
    p.add_argument("--out", help="where to write the plots (default: the results folder)")
    args = p.parse_args(argv)
    from search.tables import TRIALS, join, resolve

    fs, base = resolve(args.results)
    if fs.get_file_info(join(base, TRIALS)).type.name == "NotFound":
        print(f"error: RESULTS: no {TRIALS} in {args.results}", file=sys.stderr)
        return 2
    print(summarize(args.results, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
