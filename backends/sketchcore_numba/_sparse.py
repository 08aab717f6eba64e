"""Sparse (ELL, padded-row) matrix times a batch of vectors, as a parallel loop over rows."""

from __future__ import annotations

import numba as nb
import numpy as np

from ._fwht import JIT

__all__ = ["ell_rows"]


@nb.njit(parallel=True, **JIT)
def ell_rows(x, idx, vals, out, workers):
    """``out[b, r] = sum_s vals[r, s] * x[b, idx[r, s]]`` for 2-D ``x`` (batch, n).

    Indices in ``[-n, 0)`` count from the end (as in ``numpy.take``). Returns how many indices
    fell outside ``[-n, n)``; those slots are skipped, and the caller raises.
    """
    batch, n = x.shape
    rows, slots = idx.shape
    bad = np.zeros(workers, dtype=np.int64)
    for w in nb.prange(workers):
        cols = np.empty(slots, dtype=np.int64)
        for r in range(w * rows // workers, (w + 1) * rows // workers):
            for s in range(slots):
                k = idx[r, s]
                if k < 0:
                    k += n
                if k < 0 or k >= n:
                    bad[w] += 1
                    k = -1
                cols[s] = k
            for b in range(batch):
                acc = 0.0  # float64 accumulator, rounded once on store
                for s in range(slots):
                    k = cols[s]
                    if k >= 0:
                        acc += vals[r, s] * x[b, k]
                out[b, r] = acc
    return bad.sum()
