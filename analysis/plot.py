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
ATTACKED = "attacked forget accuracy on V_rep (worst case found; 95 % interval), lower is safer"
RETAIN = "retain accuracy, higher is better"


def _save(fig, path: Path) -> list[Path]:
    """Save ``fig`` as ``path`` (.png) and beside it as .svg; close it."""
    path = Path(path).with_suffix(".png")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return [path, path.with_suffix(".svg")]


def _interval(df: pd.DataFrame, col: str) -> np.ndarray | None:
    """Error-bar extents (2, N) of ``col`` from its ``_lo`` / ``_hi`` columns (None if absent)."""
    lo, hi = f"{col}_lo", f"{col}_hi"
    if lo not in df or hi not in df or not len(df):
        return None
    v = df[col].to_numpy(dtype=float)
    return np.nan_to_num(np.stack([v - df[lo].to_numpy(dtype=float), df[hi].to_numpy(dtype=float) - v]).clip(0))


def _errorbars(ax, x: pd.Series, y: pd.Series, xerr=None, yerr=None, color="0.4") -> None:
    if xerr is not None or yerr is not None:
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=color, alpha=0.5, lw=0.8, zorder=3)


def _marker_size(n: int) -> float:
    return float(np.clip(600 / max(n, 1) ** 0.5, 6, 40))


def _baselines(ax, trials: pd.DataFrame, x: str) -> None:
    for kind, (marker, color) in BASELINE_STYLE.items():
        b = trials[(trials["kind"] == "baseline") & (trials["method"] == kind) & (trials["status"] == "ok")]
        if len(b):
            ax.scatter(b[x], b["retain_acc"], marker=marker, s=160, color=color, edgecolor="k",
                       zorder=5, label=f"{kind} model (attacked)")
            _errorbars(ax, b[x], b["retain_acc"], xerr=_interval(b, x), color=color)


def _label(row_or_df) -> pd.Series:
    """Legend group of each defender: its method, then each robustifier stage that made it
    (its ``steps.<stage>`` is set: ``+ distill``, even when the distillation stopped at once)
    unless the method is that stage (TAR), prefixed by its experiment when several."""
    df = row_or_df
    label = df["method"].astype(str)
    for col in sorted(c for c in df if c.startswith("steps.")):
        stage = col.removeprefix("steps.")
        went = df[col].notna() & (df["method"] != stage)
        label = label + went.map({True: f" + {stage}", False: ""})
    if df["experiment"].nunique() > 1:
        return df["experiment"].astype(str) + " / " + label
    return label


def _search_time(ax, ok: pd.DataFrame, size: float) -> None:
    """Each verified model's search-time worst case, faint, joined to its reported one by a
    dotted line (a verification that found a stronger attack moved it right)."""
    if "forget_acc_attacked_search" not in ok or "verified" not in ok:
        return
    moved = ok[ok["verified"].fillna(False).astype(bool) & (ok["forget_acc_attacked_search"] != ok["forget_acc_attacked"])]
    if moved.empty:
        return
    segs = np.stack([moved[["forget_acc_attacked_search", "retain_acc"]].to_numpy(dtype=float),
                     moved[["forget_acc_attacked", "retain_acc"]].to_numpy(dtype=float)], axis=1)
    ax.add_collection(LineCollection(segs, colors="0.5", alpha=0.5, lw=0.8, linestyles="dotted"))
    ax.scatter(moved["forget_acc_attacked_search"], moved["retain_acc"], s=size, facecolors="none",
               edgecolors="0.5", alpha=0.4, label="search-time worst case of a verified model (faint)")


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
        if not many:
            _errorbars(ax, group["forget_acc_attacked"], group["retain_acc"],
                       xerr=_interval(group, "forget_acc_attacked"), yerr=_interval(group, "retain_acc"), color=color)
    _search_time(ax, ok, size)
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
        if len(defenders) <= 100:
            _errorbars(ax, group["compute_frac"], group["forget_acc_attacked"], yerr=_interval(group, "forget_acc_attacked"))
    swept = [c for c in defenders if c.startswith("param.") and defenders[c].nunique(dropna=True) > 1]
    if len(swept) == 1 and len(defenders) <= 30:  # a one-axis sweep (UNDO's α): name each point
        name = swept[0].rsplit(".", 1)[-1]
        for _, r in defenders[defenders[swept[0]].notna()].iterrows():
            value = r[swept[0]]
            ax.annotate(f"{name}={value:.2g}" if isinstance(value, float) else f"{name}={value}",
                        (r["compute_frac"], r["forget_acc_attacked"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    for kind, text in (("pure", "pure model (retrained)"), ("suppressed", "suppressed model (before its robustifier)")):
        b = ok[(ok["kind"] == "baseline") & (ok["method"] == kind)]
        marker, color = BASELINE_STYLE[kind]
        if len(b):
            ax.scatter(b["compute_frac"], b["forget_acc_attacked"], marker=marker, s=160,
                       color=color, edgecolor="k", zorder=5, label=text)
            _errorbars(ax, b["compute_frac"], b["forget_acc_attacked"], yerr=_interval(b, "forget_acc_attacked"), color=color)
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
    """Forget accuracy on V_sel (what attacks are chosen by) along each attack run against one
    model; the strongest in bold."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    metric = "forget_acc_sel" if (curves["metric"] == "forget_acc_sel").any() else "forget_acc"
    score = "forget_acc_sel_max" if "forget_acc_sel_max" in attacks else "forget_acc_max"
    c = curves[(curves["trial_id"] == trial_id) & (curves["stage"] == "attack") & (curves["metric"] == metric)]
    mine = attacks[(attacks["trial_id"] == trial_id) & (attacks["status"] == "ok")]
    best = mine.loc[mine[score].idxmax(), "attack_id"] if len(mine) else None
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
    ax.set(xlabel="attack step", ylabel=f"forget accuracy on {'V_sel' if metric.endswith('sel') else 'V'}",
           ylim=(-0.03, 1.03))
    ax.grid(alpha=0.3)
    ax.set_title(f"attacks against {trial_id} ({len(lines)} runs)", fontsize=10)
    return _save(fig, path)


def best_so_far(attacks: pd.DataFrame) -> pd.DataFrame:
    """Per model, the strongest V_sel score found so far against the attack compute spent so
    far (attacks in the order they were run; re-runs of the chosen attack left out)."""
    a = attacks[attacks["status"].isin(["ok", "pruned"]) & (attacks.get("attack.source") != "reseed")]
    if a.empty or "forget_acc_sel_max" not in a:
        return pd.DataFrame(columns=["trial_id", "flops", "best"])
    a = a.sort_values(["trial_id", "seq"] if "seq" in a else ["trial_id"], kind="stable")
    return pd.DataFrame({"trial_id": a["trial_id"], "flops": a.groupby("trial_id")["flops"].cumsum(),
                         "best": a.groupby("trial_id")["forget_acc_sel_max"].cummax()})


def attack_progress_plot(attacks: pd.DataFrame, path: Path, max_models: int = 40) -> list[Path]:
    """How each model's worst case (on V_sel) grew with the attack compute spent on it: a curve
    that still climbs at its end says the attacker's budget was too small for that model."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    data = best_so_far(attacks)
    models = list(dict.fromkeys(data["trial_id"]))[:max_models]
    for tid in models:
        g = data[data["trial_id"] == tid]
        ax.step(g["flops"], g["best"], where="post", lw=1, alpha=0.8, label=tid if len(models) <= 12 else None)
    if len(models):
        ax.set_xscale("log")
    ax.set(xlabel="attack FLOPs spent on the model", ylabel="best forget accuracy on V_sel so far", ylim=(-0.03, 1.03))
    ax.grid(alpha=0.3, which="both")
    if 0 < len(models) <= 12:
        ax.legend(fontsize=7)
    ax.set_title("worst case vs. attack compute", fontsize=10)
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
