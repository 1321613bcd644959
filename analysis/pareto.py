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
    if pts.shape[1] == 2:
        return rows[_front_2d(pts)]
    keep = np.ones(len(rows), dtype=bool)
    for i in range(len(rows)):
        dominators = (pts >= pts[i]).all(axis=1) & (pts > pts[i]).any(axis=1)
        keep[i] = not dominators.any()
    return rows[keep]


def _front_2d(pts: np.ndarray) -> np.ndarray:
    """Mask of the non-dominated points of ``pts`` (n, 2), both maximised, in O(n log n): by
    first objective, highest first; within one value of it only the points with the highest
    second objective can be optimal, and they are unless a point with a higher first objective
    reaches their second (the sweep's best so far)."""
    keep = np.zeros(len(pts), dtype=bool)
    order = np.lexsort((-pts[:, 1], -pts[:, 0]))
    best = -np.inf
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and pts[order[j], 0] == pts[order[i], 0]:
            j += 1
        top = pts[order[i], 1]  # the group's highest second objective (sorted so)
        if top > best:
            group = order[i:j]
            keep[group[pts[group, 1] == top]] = True
            best = top
        i = j
    return keep


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
