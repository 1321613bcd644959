"""Pareto sets over any columns and directions."""

from __future__ import annotations

import numpy as np


def pareto_mask(values: np.ndarray, maximize: list[bool] | np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n, k).

    Row a dominates row b when a is at least as good in every objective and strictly better in
    one (direction per column from ``maximize``). Duplicate optimal rows are all kept; a row with
    a NaN in any objective is never optimal and never dominates.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError("values must be 2-D (rows × objectives)")
    sign = np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    if sign.shape != (v.shape[1],):
        raise ValueError("maximize needs one entry per column")
    g = v * sign  # every objective now maximised
    valid = ~np.isnan(g).any(axis=1)
    mask = valid.copy()
    others = g[valid]
    for i in np.flatnonzero(valid):
        dominators = (others >= g[i]).all(axis=1) & (others > g[i]).any(axis=1)
        mask[i] = not dominators.any()
    return mask
