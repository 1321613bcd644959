"""Hypervolume: the volume a set of points dominates, up to a reference point.

Exact in every dimension: 2 objectives by a sweep over the sorted front (O(n log n)); 3 or more
by recursive slicing along the last objective (the "hypervolume by slicing objectives" method,
While et al. 2006), exact but exponential in the number of objectives, fine for fronts of
hundreds of points in 3–4 objectives.
"""

from __future__ import annotations

import numpy as np

from analysis.pareto import pareto_mask


def _minimised(points: np.ndarray, ref: np.ndarray, maximize) -> tuple[np.ndarray, np.ndarray]:
    sign = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    return np.asarray(points, dtype=float) * sign, np.asarray(ref, dtype=float) * sign


def _hv_min(p: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of points ``p`` (all objectives minimised) that strictly beat ``ref``."""
    p = p[(p < ref).all(axis=1)]
    if len(p) == 0:
        return 0.0
    p = p[pareto_mask(p, [False] * p.shape[1])]
    if p.shape[1] == 1:
        return float(ref[0] - p[:, 0].min())
    if p.shape[1] == 2:
        p = p[np.argsort(p[:, 0])]
        xs = np.append(p[1:, 0], ref[0])
        best_y = np.minimum.accumulate(p[:, 1])
        return float(np.sum((xs - p[:, 0]) * (ref[1] - best_y)))
    # Slice along the last objective: between consecutive levels, the dominated region is the
    # (k−1)-dimensional hypervolume of the points at or below the slice.
    order = np.argsort(p[:, -1])
    p = p[order]
    levels = np.append(p[:, -1], ref[-1])
    total = 0.0
    for i in range(len(p)):
        depth = levels[i + 1] - levels[i]
        if depth > 0:
            total += depth * _hv_min(p[: i + 1, :-1], ref[:-1])
    return total


def hypervolume(points: np.ndarray, ref: np.ndarray, maximize) -> float:
    """Volume dominated by ``points`` (n, k) and bounded by ``ref`` (k,), directions per column.

    Points with NaN, or not strictly better than ``ref`` in every objective, add nothing.
    """
    p, r = _minimised(points, ref, maximize)
    p = p[~np.isnan(p).any(axis=1)] if len(p) else p.reshape(0, len(r))
    return _hv_min(p, r)


def hypervolume_progress(points: np.ndarray, ref: np.ndarray, maximize) -> np.ndarray:
    """Hypervolume of the first i points, for i = 1..n (search progress over trials).

    Keeps the running front, so each step costs a hypervolume of the front only.
    """
    p, r = _minimised(points, ref, maximize)
    out = np.zeros(len(p))
    front = np.empty((0, len(r)))
    current = 0.0
    for i, q in enumerate(p):
        improves = not np.isnan(q).any() and (q < r).all() and not (front <= q).all(axis=1).any()
        if improves:
            front = np.vstack([front[~(q <= front).all(axis=1)], q])
            current = _hv_min(front, r)
        out[i] = current
    return out
