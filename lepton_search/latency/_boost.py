"""Gradient-boosted regression trees in numpy: what the kernel table fits each kernel class's efficiency with.

Small on purpose (squared loss, fixed-depth trees stored as flat heap-ordered arrays, row subsampling),
so the predictor needs nothing beyond numpy. Fitting a table of ~30k kernels takes seconds.

Example:
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(0, 4, (400, 2)); y = np.sin(x[:, 0]) + (x[:, 1] > 2)
    >>> model = fit(x, y, seed=0)
    >>> float(np.abs(model.predict(x) - y).mean()) < 0.1
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TREES = 300
DEPTH = 4
RATE = 0.05
SUBSAMPLE = 0.8
MIN_LEAF = 3


@dataclass(frozen=True)
class Boosted:
    """`base` + the sum over trees of the leaf each row reaches; node i's children are 2i+1 (<=) and 2i+2."""

    base: float
    feature: np.ndarray  # (trees, internal nodes) int
    threshold: np.ndarray  # (trees, internal nodes) float; +inf sends every row left (no split)
    value: np.ndarray  # (trees, leaves) float, learning rate applied

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=float))
        rows = np.arange(len(x))
        internal = self.feature.shape[1]
        out = np.full(len(x), self.base)
        for f, t, v in zip(self.feature, self.threshold, self.value):
            node = np.zeros(len(x), dtype=int)
            while node[0] < internal:  # every row is at the same depth
                node = 2 * node + 1 + (x[rows, f[node]] > t[node])
            out += v[node - internal]
        return out


BINS = 64  # candidate thresholds per feature: quantiles of the training rows


def _edges(x: np.ndarray, bins: int) -> list[np.ndarray]:
    """Per feature, the sorted distinct quantiles that serve as split thresholds."""
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    return [np.unique(np.quantile(x[:, j], qs)) for j in range(x.shape[1])]


def _binned(x: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Bin of each value: how many thresholds lie below it (`x <= edges[k]` iff bin <= k)."""
    return np.stack([np.searchsorted(e, x[:, j], side="left") for j, e in enumerate(edges)], axis=1)


def _best_split(b: np.ndarray, r: np.ndarray, width: int, min_leaf: int) -> tuple[int, int]:
    """(feature, bin k) maximising the squared-loss gain of sending bins <= k left; (-1, -1) if none helps."""
    n, d = b.shape
    if n < 2 * min_leaf:
        return -1, -1
    flat = (b + np.arange(d) * width).ravel()
    cnt = np.bincount(flat, minlength=d * width).reshape(d, width).cumsum(1)[:, :-1]
    tot = np.bincount(flat, weights=np.repeat(r, d), minlength=d * width).reshape(d, width).cumsum(1)[:, :-1]
    total = r.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = tot**2 / cnt + (total - tot) ** 2 / (n - cnt) - total**2 / n
    gain[(cnt < min_leaf) | (n - cnt < min_leaf)] = -np.inf
    j, k = np.unravel_index(int(np.argmax(gain)), gain.shape)
    return (int(j), int(k)) if gain[j, k] > 1e-12 else (-1, -1)


def _tree(b: np.ndarray, r: np.ndarray, edges: list[np.ndarray], width: int, depth: int,
          min_leaf: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    internal, leaves = 2**depth - 1, 2**depth
    feature, threshold = np.zeros(internal, dtype=int), np.full(internal, np.inf)
    value = np.zeros(leaves)
    members = {0: np.arange(len(r))}
    for node in range(internal + leaves):
        idx = members.pop(node, np.array([], dtype=int))
        if node >= internal:
            value[node - internal] = r[idx].mean() if len(idx) else 0.0
            continue
        f, k = _best_split(b[idx], r[idx], width, min_leaf) if len(idx) else (-1, -1)
        if f < 0:  # no split: all rows go left; a leaf under it stays empty (value 0, unreachable)
            members[2 * node + 1] = idx
            continue
        feature[node], threshold[node] = f, edges[f][k]
        go = b[idx, f] > k
        members[2 * node + 1], members[2 * node + 2] = idx[~go], idx[go]
    return feature, threshold, value


def fit(x: np.ndarray, y: np.ndarray, *, trees: int = TREES, depth: int = DEPTH, rate: float = RATE,
        subsample: float = SUBSAMPLE, min_leaf: int = MIN_LEAF, seed: int = 0) -> Boosted:
    """Boosted trees minimising squared error of `y` on rows `x` (deterministic for a given seed)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    base = float(y.mean())
    pred = np.full(len(y), base)
    feats, thrs, vals = [], [], []
    n_sub = max(min(len(y), round(len(y) * subsample)), 1)
    edges = _edges(x, BINS)
    b = _binned(x, edges)
    width = max(len(e) for e in edges) + 1
    for _ in range(trees):
        rows = rng.choice(len(y), n_sub, replace=False) if n_sub < len(y) else np.arange(len(y))
        f, t, v = _tree(b[rows], y[rows] - pred[rows], edges, width, depth, min_leaf)
        one = Boosted(0.0, f[None], t[None], v[None] * rate)
        pred += one.predict(x)
        feats.append(f)
        thrs.append(t)
        vals.append(v * rate)
    return Boosted(base, np.array(feats), np.array(thrs), np.array(vals))
