"""The kernels ``NumbaBackend`` overrides, on numpy float32/float64 arrays: argument checks,
reshaping to ``(rows, n)``, plan caching, and the calls into the compiled passes."""

from __future__ import annotations

import functools
import weakref

import numba
import numpy as np

from ._run import PARALLEL_MIN, run_passes
from ._schedule import plan_passes
from ._sparse import ell_rows

__all__ = ["fwht", "hadamard", "ell_matvec"]

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=64)
def _fwht_passes(n: int):
    return plan_passes((n,), (None,), (None,))


def _kron_passes(plan):
    passes = _PLANS.get(plan)
    if passes is None:
        passes = plan_passes(plan.sizes, plan.row_perm, plan.col_perm)
        _PLANS[plan] = passes
    return passes


def _rows(x: np.ndarray) -> np.ndarray:
    """``x`` as a C-contiguous ``(rows, n)`` array (a copy only when ``x`` is not contiguous)."""
    n = x.shape[-1]
    return np.ascontiguousarray(x).reshape(-1, n)


def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalized Walsh-Hadamard transform of the last axis (Sylvester order)."""
    if x.ndim == 0:
        raise ValueError("fwht needs an array with a last axis, got a 0-d array.")
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(
            f"the Walsh-Hadamard transform needs a power-of-two length on the last axis, got {n}; "
            "the sketches pad automatically (sketchcore.kernels.pad_last pads by hand)."
        )
    return run_passes(_rows(x), _fwht_passes(n), None, 1.0).reshape(x.shape)


def hadamard(x: np.ndarray, plan, diag) -> np.ndarray:
    """``M (diag * x)`` for the normalized permuted Kronecker Hadamard ``M`` of ``plan``."""
    if x.ndim == 0 or x.shape[-1] != plan.n:
        raise ValueError(
            f"hadamard: the last axis of x (shape {x.shape}) must have the plan's length {plan.n} "
            f"(factor sizes {plan.sizes}); pad x or build the plan for its length."
        )
    scale = 1.0 / float(plan.n) ** 0.5
    d = None
    if diag is not None:
        d = np.asarray(diag)
        if d.dtype != x.dtype:
            d = d.astype(x.dtype)
        if d.ndim == 0:
            scale *= float(d)
            d = None
        elif d.shape != (plan.n,):
            x = np.multiply(x, d)  # a batched diagonal: apply it first (broadcasting as numpy)
            d = None
        else:
            d = np.ascontiguousarray(d)
    y = run_passes(_rows(x), _kron_passes(plan), d, scale)
    return y.reshape(x.shape)


def ell_matvec(x: np.ndarray, idx, vals) -> np.ndarray:
    """``y[..., r] = sum_s vals[r, s] * x[..., idx[r, s]]`` for ``idx, vals`` of shape (R, S)."""
    idx = np.asarray(idx)
    vals = np.asarray(vals)
    if idx.ndim != 2 or vals.shape != idx.shape:
        raise ValueError(
            f"ell_matvec needs idx and vals of the same shape (rows, slots), got {idx.shape} and "
            f"{vals.shape}."
        )
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"ell_matvec: idx must be an integer array, got dtype {idx.dtype}.")
    if x.ndim == 0:
        raise ValueError("ell_matvec needs x with a last axis, got a 0-d array.")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    vals = np.ascontiguousarray(vals, dtype=x.dtype)
    x2 = _rows(x)
    out = np.empty((x2.shape[0], idx.shape[0]), dtype=x.dtype)
    if out.size:
        if x2.shape[1] == 0 and idx.shape[1]:
            raise IndexError("ell_matvec: x has an empty last axis but idx has entries.")
        work = idx.size * max(1, x2.shape[0])
        workers = 1 if work < PARALLEL_MIN else max(1, min(numba.get_num_threads(), idx.shape[0]))
        bad = ell_rows(x2, idx, vals, out, workers)
        if bad:
            raise IndexError(
                f"ell_matvec: {bad} entries of idx fall outside [-{x2.shape[1]}, {x2.shape[1]}) "
                f"for x with last axis {x2.shape[1]}; fix the sparse matrix's column indices."
            )
    return out.reshape(*x.shape[:-1], idx.shape[0])
