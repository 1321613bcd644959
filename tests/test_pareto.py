import numpy as np
import pytest

from analysis.pareto import pareto_mask


def brute_force(values, maximize):
    g = np.where(maximize, 1.0, -1.0) * values
    n = len(g)
    out = np.zeros(n, bool)
    for i in range(n):
        if np.isnan(g[i]).any():
            continue
        out[i] = not any(
            not np.isnan(g[j]).any() and (g[j] >= g[i]).all() and (g[j] > g[i]).any()
            for j in range(n)
        )
    return out


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_with_duplicates_and_nan(k, seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 6, size=(60, k)).astype(float)  # small ints: many ties and duplicates
    v[rng.random(60) < 0.1, rng.integers(0, k)] = np.nan
    maximize = rng.random(k) < 0.5
    assert (pareto_mask(v, maximize) == brute_force(v, maximize)).all()


def test_known_case():
    v = np.array([[0.9, 0.1], [0.8, 0.05], [0.7, 0.2], [0.9, 0.1], [np.nan, 0.0]])
    assert pareto_mask(v, [True, False]).tolist() == [True, True, False, True, False]


@pytest.mark.parametrize("n", [1, 2, 7, 300])
@pytest.mark.parametrize("seed", range(8))
def test_the_two_objective_sweep_matches_brute_force(n, seed):
    """Two objectives take an O(n log n) sweep (thousands of trials in a report); ties in
    either objective, duplicates and every direction."""
    rng = np.random.default_rng(100 + seed)
    v = rng.integers(0, 4 if seed % 2 else 50, size=(n, 2)).astype(float)
    maximize = [bool(seed & 2), bool(seed & 4)]
    assert (pareto_mask(v, maximize) == brute_force(v, maximize)).all()
