"""Figures from an experiment's tables (matplotlib, headless), each saved as PNG and SVG.

Every plot takes DataFrames read from the tables and stays readable from 1 trial to thousands
(small translucent markers, line collections instead of one artist per line).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

BASELINE_STYLE = {"pure": ("*", "tab:green"), "reference": ("s", "tab:red"), "suppressed": ("D", "tab:purple")}
ATTACKED = "attacked forget accuracy on V (worst case found), lower is safer"
RETAIN = "retain accuracy, higher is better"


def _save(fig, path: Path) -> list[Path]:
    """Save ``fig`` as ``path`` (.png) and beside it as .svg; close it."""
    path = Path(path).with_suffix(".png")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return [path, path.with_suffix(".svg")]


def _marker_size(n: int) -> float:
    return float(np.clip(600 / max(n, 1) ** 0.5, 6, 40))


def _baselines(ax, trials: pd.DataFrame, x: str) -> None:
    for kind, (marker, color) in BASELINE_STYLE.items():
        b = trials[(trials["kind"] == "baseline") & (trials["method"] == kind) & (trials["status"] == "ok")]
        if len(b):
            ax.scatter(b[x], b["retain_acc"], marker=marker, s=160, color=color, edgecolor="k",
                       zorder=5, label=f"{kind} model (attacked)")


def _label(row_or_df) -> pd.Series:
    """Legend group of each defender: its method (+ UNDO when distilled; TAR is its own method),
    prefixed by its experiment when several."""
    df = row_or_df
    label = df["method"].astype(str)
    if "suppressed_key" in df:
        distilled = df["suppressed_key"].notna() & (df["method"] != "tar")
        label = label + distilled.map({True: " + UNDO", False: ""})
    if df["experiment"].nunique() > 1:
        return df["experiment"].astype(str) + " / " + label
    return label


def tradeoff_plot(trials: pd.DataFrame, front: pd.Series, path: Path) -> list[Path]:
    """Retain vs. attacked forget accuracy, coloured by method. Each defender's pre-attack point
    (hollow) is joined to its post-attack point (filled); the front (``front``, a boolean mask
    over ``trials``) is drawn as a staircase; the pure and reference models are marked."""
    fig, ax = plt.subplots(figsize=(7, 6))
    ok = trials[(trials["kind"] == "defender") & (trials["status"] == "ok")]
    on_front = front.reindex(ok.index, fill_value=False)
    size = _marker_size(len(ok))
    alpha = float(np.clip(8 / max(len(ok), 1) ** 0.5, 0.15, 0.9))
    many = len(ok) > 100  # past this, before→after segments of every trial only hide the data
    for (label, group), color in zip(ok.groupby(_label(ok)), plt.cm.tab10.colors):
        joined = group[on_front[group.index]] if many else group
        segs = np.stack([joined[["forget_acc", "retain_acc"]].to_numpy(),
                         joined[["forget_acc_attacked", "retain_acc"]].to_numpy()], axis=1)
        ax.add_collection(LineCollection(segs, colors=[color], alpha=0.6, lw=0.8))
        ax.scatter(joined["forget_acc"], joined["retain_acc"], s=size * (2 if many else 1),
                   facecolors="none", edgecolors=[color], alpha=0.8 if many else alpha)
        before = "hollow: before attack" + (", front only" if many else "")
        ax.scatter(group["forget_acc_attacked"], group["retain_acc"], s=size, color=color,
                   alpha=max(alpha, 0.5), label=f"{label} (attacked; {before})")
    best = trials[front.reindex(trials.index, fill_value=False)].sort_values("forget_acc_attacked")
    if len(best):
        ax.step(best["forget_acc_attacked"], best["retain_acc"], where="post", color="k", lw=1.2,
                zorder=4, label="Pareto front")
        ax.scatter(best["forget_acc_attacked"], best["retain_acc"], s=size * 1.6, facecolors="none",
                   edgecolors="k", zorder=4)
    _baselines(ax, trials, "forget_acc_attacked")
    ax.set(xlabel=ATTACKED, ylabel=RETAIN, xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax.set_title(f"{', '.join(map(str, trials['experiment'].unique()[:3]))}: retain vs. attacked forget",
                 fontsize=10)
    return _save(fig, path)


def compute_plot(trials: pd.DataFrame, path: Path) -> list[Path]:
    """The robustness–compute curve: attacked forget accuracy vs. the defence's compute as a
    fraction of the reference model's pre-training (log scale); the reference model, which
    costs nothing extra, is a dashed line."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = trials[(trials["status"] == "ok") & (trials["compute_frac"] > 0)]
    defenders = ok[ok["kind"] == "defender"]
    size = _marker_size(len(defenders))
    for label, group in defenders.groupby(_label(defenders)):
        ax.scatter(group["compute_frac"], group["forget_acc_attacked"], s=size, alpha=0.7, label=label)
    if "param.undo.alpha" in defenders and len(defenders) <= 30:  # name each point of an α sweep
        for _, r in defenders[defenders["param.undo.alpha"].notna()].iterrows():
            ax.annotate(f"α={r['param.undo.alpha']:.2g}", (r["compute_frac"], r["forget_acc_attacked"]),
                        xytext=(4, 4), textcoords="offset points", fontsize=7)
    for kind, text in (("pure", "pure model (retrained)"), ("suppressed", "suppressed model (shallow only / TAR's safeguard)")):
        b = ok[(ok["kind"] == "baseline") & (ok["method"] == kind)]
        marker, color = BASELINE_STYLE[kind]
        if len(b):
            ax.scatter(b["compute_frac"], b["forget_acc_attacked"], marker=marker, s=160,
                       color=color, edgecolor="k", zorder=5, label=text)
    ref = trials[(trials["kind"] == "baseline") & (trials["method"] == "reference") & (trials["status"] == "ok")]
    for value in ref["forget_acc_attacked"]:
        ax.axhline(value, color="tab:red", ls="--", lw=1, label="reference model (attacked)")
    if len(ok):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels would overlap
    ax.set(xlabel="defence compute / reference pre-training compute", ylabel=ATTACKED.split(",")[0],
           ylim=(-0.03, 1.03))
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    ax.set_title("robustness vs. compute", fontsize=10)
    return _save(fig, path)


def attack_curves_plot(curves: pd.DataFrame, attacks: pd.DataFrame, trial_id: str, path: Path) -> list[Path]:
    """Forget accuracy on V along each attack run against one model; the strongest in bold."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    c = curves[(curves["trial_id"] == trial_id) & (curves["stage"] == "attack") & (curves["metric"] == "forget_acc")]
    mine = attacks[(attacks["trial_id"] == trial_id) & (attacks["status"] == "ok")]
    best = mine.loc[mine["forget_acc_max"].idxmax(), "attack_id"] if len(mine) else None
    lines = [g.sort_values("step")[["step", "value"]].to_numpy() for _, g in c.groupby("attack_id")]
    if lines:
        ax.add_collection(LineCollection(lines, colors="tab:blue", alpha=float(np.clip(3 / len(lines) ** 0.5, 0.1, 0.8)), lw=1))
        ax.autoscale()
    if best is not None:
        b = c[c["attack_id"] == best].sort_values("step")
        lr = mine.set_index("attack_id").get("attack.lr", pd.Series(dtype=float)).get(best)
        ax.plot(b["step"], b["value"], color="tab:red", lw=2.2,
                label=f"strongest: {best}" + (f" (lr {lr:.2g})" if lr is not None and lr == lr else ""))
        ax.legend(fontsize=8)
    ax.set(xlabel="attack step", ylabel="forget accuracy on V", ylim=(-0.03, 1.03))
    ax.grid(alpha=0.3)
    ax.set_title(f"attacks against {trial_id} ({len(lines)} runs)", fontsize=10)
    return _save(fig, path)


def hypervolume_plot(progress: dict[str, np.ndarray], path: Path) -> list[Path]:
    """Hypervolume of the front found so far vs. trial number, one line per experiment."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, hv in progress.items():
        ax.step(np.arange(1, len(hv) + 1), hv, where="post", label=name, marker="o" if len(hv) < 40 else None, ms=3)
    ax.set(xlabel="defender trial (in order of completion)",
           ylabel="hypervolume (ref. point: retain 0, attacked 1)", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if progress:
        ax.legend(fontsize=8)
    ax.set_title("search progress", fontsize=10)
    return _save(fig, path)
