"""The Pareto set of an experiment, as text and as ``pareto.png``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from analysis.pareto import pareto_mask
from analysis.plot import pareto_plot

OBJECTIVES = {"retain_acc": True, "forget_acc_attacked": False}  # column: maximise?


def load_trials(results: str) -> pd.DataFrame:
    """``trials.parquet`` of a results folder (local path or storage URI)."""
    from search.tables import TRIALS, read_table

    return read_table(results, TRIALS).to_pandas()


def front_mask(trials: pd.DataFrame) -> pd.Series:
    """Pareto-optimal defender trials (ok ones only; baselines are context, not candidates)."""
    cand = (trials["kind"] == "defender") & (trials["status"] == "ok")
    mask = pd.Series(False, index=trials.index)
    if cand.any():
        values = trials.loc[cand, list(OBJECTIVES)].to_numpy(dtype=float)
        mask[cand] = pareto_mask(values, list(OBJECTIVES.values()))
    return mask


def _table(df: pd.DataFrame) -> str:
    params = sorted(c for c in df.columns if c.startswith("param.") and df[c].notna().any())
    cols = ["trial_id", "method", "retain_acc", "forget_acc", "forget_acc_attacked", *params]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")


def summarize(results: str, out_dir: str | None = None) -> str:
    """Write ``pareto.png`` (into ``out_dir``, default the results folder when local) and return
    the Pareto set, the baselines and the failures as text."""
    trials = load_trials(results)
    front = front_mask(trials)
    local = "://" not in results
    out = Path(out_dir or (results if local else tempfile.mkdtemp()))
    out.mkdir(parents=True, exist_ok=True)
    png = pareto_plot(trials, front, out / "pareto.png")
    lines = [f"Pareto set ({int(front.sum())} of {int((trials['kind'] == 'defender').sum())} "
             "defender trials; maximise retain_acc, minimise forget_acc_attacked):"]
    lines.append(_table(trials[front].sort_values("forget_acc_attacked")) if front.any() else "  (none)")
    base = trials[trials["kind"] == "baseline"]
    if len(base):
        lines += ["", "Baselines:", _table(base)]
    failed = trials[trials["status"] != "ok"]
    if len(failed):
        lines += ["", f"Failed: {len(failed)} (errors in trials.parquet, column 'error')"]
    lines += ["", f"Plot: {png}"]
    return "\n".join(lines)


