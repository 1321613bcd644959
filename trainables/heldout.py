"""Select on one half of V, report on the other; intervals on accuracies.

An adversary search picks the strongest (attack, checkpoint) out of many; scoring that choice on
the same questions it was chosen on reports the maximum of noise as recovery (a winner's curse).
So V, the forget evaluation set no attack trains on, is split once more, seeded and disjoint:

  V_sel   what the adversary search, its pruner and the choice of attack and checkpoint see
  V_rep   what the chosen attack is reported on (``report_fraction`` of V)

Each setting's ``score`` reports ``forget_acc`` (all of V), ``forget_acc_sel`` and
``forget_acc_rep`` from one per-question hit vector through :func:`v_metrics`.
"""

from __future__ import annotations

import math
import random

import torch

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


def report_split(n: int, report_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(V_sel indices, V_rep indices) of a V of ``n`` items: disjoint, together all of V, seeded;
    V_rep gets round(``report_fraction``·n) items (at least one each side where n ≥ 2)."""
    order = list(range(n))
    random.Random(f"report-split-{seed}").shuffle(order)
    n_rep = min(n - 1, max(1, round(n * report_fraction))) if n >= 2 else n
    return torch.tensor(sorted(order[n_rep:]), dtype=torch.long), torch.tensor(sorted(order[:n_rep]), dtype=torch.long)


def v_metrics(hits: torch.Tensor, report_fraction: float, seed: int) -> dict[str, float]:
    """``forget_acc`` on all of V and on each half, from per-item hits (bool, in V's order)."""
    sel, rep = report_split(len(hits), report_fraction, seed)
    h = hits.float()
    mean = lambda t: t.mean().item() if len(t) else math.nan  # noqa: E731
    return {"forget_acc": mean(h), "forget_acc_sel": mean(h[sel]), "forget_acc_rep": mean(h[rep])}


def sizes(n_retain: int, n_v: int, report_fraction: float, seed: int) -> dict[str, int]:
    """Item counts behind each accuracy column (the n of its interval)."""
    sel, rep = report_split(n_v, report_fraction, seed)
    return {"retain": n_retain, "full": n_v, "sel": len(sel), "rep": len(rep)}


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` items (NaN if either is
    unknown). Unlike p ± z·se it stays inside [0, 1] and keeps its coverage near 0 and 1, where
    unlearned models live."""
    if n is None or n <= 0 or p is None or p != p:
        return math.nan, math.nan
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the bounds contain p exactly (float rounding could put 0 just outside [lo, hi] at p = 0)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))
