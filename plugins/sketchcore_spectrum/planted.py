"""A symmetric operator with a known ("planted") spectrum, for tests, docs and calibration.

``H = Q diag(lambda) Q^T`` with ``Q`` a seeded orthogonal map applied in O(N log N): a random
permutation, random signs, then the orthonormal DCT-II. The eigenvalues are exactly the ones
given, and the eigenvectors are dense (spread over all coordinates, like a Hessian's outliers).
"""

from __future__ import annotations

import numpy as np

from sketchcore import InvalidOptionError, ShapeError

__all__ = ["PlantedHessian"]


class PlantedHessian:
    """``H = Q diag(eigenvalues) Q^T`` on ``R^N``; ``H(v)`` / ``H.matvec(v)`` for ``(..., N)``."""

    def __init__(self, eigenvalues, *, seed: int = 0):
        lam = np.asarray(eigenvalues, dtype=np.float64)
        if lam.ndim != 1 or lam.size < 2 or not np.all(np.isfinite(lam)):
            raise InvalidOptionError(
                "eigenvalues must be a finite 1-D array of at least 2 values, got shape "
                f"{lam.shape}."
            )
        self.eigenvalues = lam
        self.num_params = lam.size
        rng = np.random.default_rng(seed)
        self._perm = rng.permutation(lam.size)
        self._inv_perm = np.argsort(self._perm)
        self._signs = rng.choice(np.array([-1.0, 1.0]), size=lam.size)

    def _q(self, z):
        from scipy.fft import idct

        return (self._signs * idct(z, norm="ortho", axis=-1))[..., self._inv_perm]

    def _qt(self, x):
        from scipy.fft import dct

        return dct(self._signs * x[..., self._perm], norm="ortho", axis=-1)

    def matvec(self, v):
        v = np.asarray(v, dtype=np.float64)
        if v.shape[-1:] != (self.num_params,):
            raise ShapeError(f"PlantedHessian acts on R^{self.num_params}, got shape {v.shape}.")
        return self._q(self.eigenvalues * self._qt(v))

    __call__ = matvec

    def eigenvector(self, i: int) -> np.ndarray:
        """The unit eigenvector of ``eigenvalues[i]``."""
        e = np.zeros(self.num_params)
        e[i] = 1.0
        return self._q(e)

    def top(self, k: int) -> np.ndarray:
        return np.sort(self.eigenvalues)[::-1][:k]

    def bottom(self, k: int) -> np.ndarray:
        return np.sort(self.eigenvalues)[:k]
