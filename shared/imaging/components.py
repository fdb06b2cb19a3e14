"""Connected components of a bool grid, numpy only (the Lambda has no scipy)."""
from __future__ import annotations

import numpy as np


def coarse_regions(coarse: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a small bool grid: (labels, -1 outside; count). Union-find with
    numpy over the grid's cells, so the cost grows with the cells, never with cells x regions."""
    gh, gw = coarse.shape
    on = coarse.ravel()
    idx = np.arange(gh * gw).reshape(gh, gw)
    parent = idx.ravel().copy()

    def root(a: np.ndarray) -> np.ndarray:
        while True:
            up = parent[a]
            if np.array_equal(up, a):
                return a
            parent[a] = parent[up]  # path halving
            a = parent[a]

    # Each cell is joined to its right, lower, lower-right and lower-left neighbours when both are on.
    a_parts, b_parts = [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        lo, hi = max(0, -dx), gw - max(0, dx)
        a, b = idx[: gh - dy, lo:hi].ravel(), idx[dy:, lo + dx : hi + dx].ravel()
        both = on[a] & on[b]
        a_parts.append(a[both])
        b_parts.append(b[both])
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    while len(a):  # link the larger root of every joined pair to the smaller, until they agree
        ra, rb = root(a), root(b)
        differ = ra != rb
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(ra[differ], rb[differ]), np.minimum(ra[differ], rb[differ]))
        a, b = a[differ], b[differ]
    roots = root(np.arange(gh * gw))[on]
    # Regions are numbered in raster order of their first cell: the plan does not depend on the merges.
    uniq, first = np.unique(roots, return_index=True)
    rank = np.empty(len(uniq), np.int32)
    rank[np.argsort(first)] = np.arange(len(uniq), dtype=np.int32)
    labels = np.full(gh * gw, -1, np.int32)
    labels[on] = rank[np.searchsorted(uniq, roots)]
    return labels.reshape(gh, gw), len(uniq)
