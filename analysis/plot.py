"""Figures from an experiment's tables (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

BASELINE_STYLE = {"pure": ("*", "tab:green"), "reference": ("s", "tab:red")}


def pareto_plot(trials: pd.DataFrame, front: pd.Series, path: Path) -> Path:
    """Retain accuracy vs. attacked forget accuracy of every defender trial, the front joined,
    the pure and reference models marked. ``front`` is a boolean mask over ``trials``."""
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    defenders = trials[trials["kind"] == "defender"]
    ok = defenders["status"] == "ok"
    on = front.reindex(defenders.index, fill_value=False)
    for method, group in defenders[ok & ~on].groupby("method"):
        ax.scatter(group["forget_acc_attacked"], group["retain_acc"], s=28, alpha=0.45,
                   label=f"{method} (dominated)")
    best = defenders[ok & on].sort_values("forget_acc_attacked")
    if len(best):
        ax.step(best["forget_acc_attacked"], best["retain_acc"], where="post", color="k", lw=1, alpha=0.6)
        ax.scatter(best["forget_acc_attacked"], best["retain_acc"], s=48, color="tab:blue",
                   edgecolor="k", zorder=3, label="Pareto front")
    for kind, (marker, color) in BASELINE_STYLE.items():
        b = trials[(trials["kind"] == "baseline") & (trials["method"] == kind) & (trials["status"] == "ok")]
        if len(b):
            ax.scatter(b["forget_acc_attacked"], b["retain_acc"], marker=marker, s=140, color=color,
                       edgecolor="k", zorder=4, label=f"{kind} model")
    ax.set_xlabel("attacked forget accuracy on V (worst case found) — lower is safer")
    ax.set_ylabel("retain accuracy — higher is better")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    exp = trials["experiment"].iloc[0] if len(trials) else ""
    ax.set_title(f"{exp}: retain vs. attacked forget", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
