"""``python -m analysis RESULTS [RESULTS ...] [--out DIR] [--retain-floor X] [--trial ID]``

Prints each experiment's Pareto set and writes the figures (PNG and SVG) and a Markdown and
HTML report comparing the experiments. RESULTS may be local paths or storage URIs, or an
experiment's Optuna journal (``studies.journal``): then each study is listed with its trials
and best values.
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
    if all(r.endswith(".journal") for r in args.results):
        return journals(args.results)
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


def journals(paths: list[str]) -> int:
    """Each study of each Optuna journal: trials by state, best value(s) and parameters."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for path in paths:
        if not Path(path).is_file():
            print(f"error: RESULTS: no such journal: {path}", file=sys.stderr)
            return 2
        store = JournalStorage(JournalFileBackend(path))
        print(f"== {path}")
        for summary in optuna.get_all_study_summaries(store, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=store)
            states = {}
            for t in study.trials:
                states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
            counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            if len(study.directions) > 1:
                best = f"{len(study.best_trials)} on the Pareto front"
            else:
                done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
                best = (f"best {study.best_value:.3f} (trial {study.best_trial.number}: "
                        + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in study.best_params.items()) + ")") if done else "no completed trial"
            print(f"{summary.study_name}: {counts or 'no trials'}; {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
