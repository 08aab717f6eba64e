"""Quantities derived from extreme eigenvalues: RNEG, outlier ratios, gradient-outlier alignment."""

from __future__ import annotations

import math

import numpy as np

from sketchcore import InvalidOptionError, ShapeError

__all__ = ["rneg", "outlier_ratios", "count_outliers", "gradient_alignment"]


def rneg(lambda_max: float, lambda_min: float) -> float:
    """``RNEG = |lambda_min| / lambda_max`` when ``lambda_min < 0``; 0 when the spectrum has no
    negative part; NaN when ``lambda_max <= 0`` (no positive scale to compare against)."""
    lambda_max, lambda_min = float(lambda_max), float(lambda_min)
    if not lambda_max > 0:
        return math.nan
    return max(-lambda_min, 0.0) / lambda_max


def outlier_ratios(top: np.ndarray) -> np.ndarray:
    """``R_n = lambda_n / lambda_1`` for the top eigenvalues (descending, ``lambda_1 > 0``)."""
    top = np.asarray(top, dtype=np.float64)
    if top.ndim != 1 or top.size == 0:
        raise ShapeError(
            f"top must be a non-empty 1-D array of eigenvalues, got shape {top.shape}.")
    if not top[0] > 0:
        return np.full(top.shape, np.nan)
    return top / top[0]


def count_outliers(top: np.ndarray, threshold: float = 0.2) -> int:
    """Number of top eigenvalues with ``R_n > threshold`` (``lambda_1`` itself counts).

    Only the eigenvalues passed in are examined: when all of them are outliers the true count
    may be larger (``SpectrumResult.outliers_saturated`` says so).
    """
    if not 0 < threshold < 1:
        raise InvalidOptionError(f"outlier threshold must be in (0, 1), got {threshold!r}; "
                                 "the paper uses 0.2.")
    r = outlier_ratios(top)
    return int(np.sum(r > threshold))


def gradient_alignment(gradient: np.ndarray, vectors: np.ndarray) -> float:
    """Fraction of ``||g||^2`` in the span of ``vectors`` (rows, ``(r, D)``):
    ``||P g||^2 / ||g||^2``.

    The rows need not be orthonormal (they are orthonormalized here). NaN for a zero gradient;
    0 when ``r == 0``.
    """
    g = np.asarray(gradient, dtype=np.float64).reshape(-1)
    V = np.asarray(vectors, dtype=np.float64)
    if V.ndim != 2 or (V.shape[0] and V.shape[1] != g.size):
        raise ShapeError(f"vectors must have shape (r, {g.size}) to match the gradient, "
                         f"got {V.shape}.")
    gg = float(g @ g)
    if gg == 0.0:
        return math.nan
    if V.shape[0] == 0:
        return 0.0
    Q, _ = np.linalg.qr(V.T)
    c = Q.T @ g
    return float(c @ c) / gg
