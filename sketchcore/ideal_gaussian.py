"""What an ideal Gaussian sketch would do to a set of vectors, simulated from their Gram matrix.

An ideal sketch ``Phi = G / sqrt(D)`` (``G`` a D x N matrix of iid standard normals, what TRAK's
projector approximates) is the yardstick every structured sketch is measured against. On vectors
``x_1..x_n`` with Gram matrix ``K`` it needs no D x N matrix at all: the rows of ``G X`` are iid
``N(0, K)``, so the sketched Gram matrix ``X^T G^T G X / D`` has the law of ``L W^T W L^T / D``
with ``K = L L^T`` and ``W`` a D x r standard normal matrix (r = rank K). ``W^T W`` is
Wishart(r, D); for ``D >= r`` it is drawn in O(r^3) by Bartlett's decomposition, whatever D is,
so a benchmark can draw many ideal sketches at every D for the cost of one real one.

A structured sketch whose accuracy falls well below this band on some data has met data its
structure is blind to (docs/results.md, section 2, shows one: afjl on MiniLM gradients).
"""

from __future__ import annotations

import numpy as np

__all__ = ["IdealGaussianSketch"]


class IdealGaussianSketch:
    """Draws of the sketched Gram matrix an ideal dense Gaussian sketch gives vectors of Gram
    matrix ``gram`` (n x n, symmetric positive semi-definite, float64)."""

    def __init__(self, gram) -> None:
        k = np.asarray(gram, dtype=np.float64)
        if k.ndim != 2 or k.shape[0] != k.shape[1]:
            raise ValueError(f"gram must be a square matrix, got shape {k.shape}; pass X @ X.T of "
                             "the vectors (rows of X).")
        if not np.all(np.isfinite(k)):
            raise ValueError("gram holds non-finite values; the vectors must be finite.")
        w, v = np.linalg.eigh((k + k.T) / 2.0)
        keep = w > max(float(w.max(initial=0.0)), 0.0) * k.shape[0] * np.finfo(np.float64).eps
        #: K = L L^T with L of shape (n, rank)
        self.factor = v[:, keep] * np.sqrt(w[keep])
        self.size = k.shape[0]

    @property
    def rank(self) -> int:
        return int(self.factor.shape[1])

    def _wishart(self, out_dim: int, rng: np.random.Generator) -> np.ndarray:
        """``W^T W`` for a ``out_dim x rank`` standard normal ``W``."""
        r = self.rank
        if out_dim < r:  # singular Wishart: draw W itself (small: out_dim x r)
            w = rng.standard_normal((out_dim, r))
            return w.T @ w
        a = np.tril(rng.standard_normal((r, r)), k=-1)  # Bartlett: W^T W = A A^T in law
        a[np.diag_indices(r)] = np.sqrt(rng.chisquare(out_dim - np.arange(r)))
        return a @ a.T

    def gram(self, out_dim: int, seed: int | np.random.Generator = 0) -> np.ndarray:
        """One draw of the n x n Gram matrix of the sketched vectors at sketch size ``out_dim``."""
        if isinstance(out_dim, bool) or not isinstance(out_dim, (int, np.integer)) or out_dim < 1:
            raise ValueError(f"out_dim must be a positive integer, got {out_dim!r}.")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        if self.rank == 0:
            return np.zeros((self.size, self.size))
        m = self._wishart(int(out_dim), rng) / float(out_dim)
        return self.factor @ m @ self.factor.T
