"""Pareto filtering as plain data (no Optuna, no plotly), so it can be checked independently."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def non_dominated(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of rows no other row dominates. `directions` holds 'minimize'/'maximize' per column.

    Row a dominates b when a is no worse in every column and strictly better in one. Equal rows do
    not dominate each other (both stay).

    Example:
        >>> non_dominated(np.array([[0.9, 1.0], [0.8, 2.0], [0.95, 3.0]]), ["maximize", "minimize"]).tolist()
        [True, False, True]
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return np.zeros(0, dtype=bool)
    sign = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    v = values * sign  # everything minimised
    no_worse = (v[:, None, :] <= v[None, :, :]).all(axis=2)
    better = (v[:, None, :] < v[None, :, :]).any(axis=2)
    dominates = no_worse & better  # dominates[i, j]: i dominates j
    return ~dominates.any(axis=0)
