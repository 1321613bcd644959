"""Pareto sets over any columns and directions: masks, non-dominated ranks, feasibility."""

from __future__ import annotations

import numpy as np


def _as_max(values: np.ndarray, maximize) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError("values must be 2-D (rows × objectives)")
    sign = np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    if sign.shape != (v.shape[1],):
        raise ValueError("maximize needs one entry per column")
    return v * sign  # every objective now maximised


def _candidates(g: np.ndarray, feasible) -> np.ndarray:
    ok = ~np.isnan(g).any(axis=1)
    if feasible is not None:
        ok &= np.asarray(feasible, dtype=bool)
    return ok


def _front(g: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The non-dominated subset of ``rows`` (indices into ``g``)."""
    pts = g[rows]
    keep = np.ones(len(rows), dtype=bool)
    for i in range(len(rows)):
        dominators = (pts >= pts[i]).all(axis=1) & (pts > pts[i]).any(axis=1)
        keep[i] = not dominators.any()
    return rows[keep]


def pareto_mask(values: np.ndarray, maximize, feasible=None) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n, k).

    Row a dominates row b when a is at least as good in every objective and strictly better in
    one (direction per column from ``maximize``). Duplicate optimal rows are all kept. A row with
    a NaN in any objective, or marked False in ``feasible`` (e.g. below a retain floor), is never
    optimal and never dominates.
    """
    g = _as_max(values, maximize)
    mask = np.zeros(len(g), dtype=bool)
    mask[_front(g, np.flatnonzero(_candidates(g, feasible)))] = True
    return mask


def pareto_ranks(values: np.ndarray, maximize, feasible=None) -> np.ndarray:
    """Non-dominated sorting: rank 1 is the Pareto front, rank 2 the front once rank 1 is
    removed, and so on. NaN or infeasible rows get rank 0 (unranked)."""
    g = _as_max(values, maximize)
    ranks = np.zeros(len(g), dtype=int)
    rest = np.flatnonzero(_candidates(g, feasible))
    rank = 0
    while len(rest):
        rank += 1
        front = _front(g, rest)
        ranks[front] = rank
        rest = np.setdiff1d(rest, front, assume_unique=True)
    return ranks
