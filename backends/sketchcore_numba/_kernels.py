"""The kernels ``NumbaBackend`` overrides, on numpy float32/float64 arrays: argument checks,
reshaping to ``(rows, n)``, aligned results, plan caching, threading, and the calls into the
compiled code (``_fwht``, ``_hadamard``, ``_sparse``; the fused sketches are in ``_ops``)."""

from __future__ import annotations

import threading
import weakref

import numba
import numpy as np

from ._fwht import empty_signs, fwht_plain, fwht_row_parallel, fwht_rows, fwht_rows_serial
from ._hadamard import gather_rows, had_row_parallel_load, had_rows, had_top_level
from ._memory import ALIGN, ALIGN_MIN_BYTES, aligned_empty  # noqa: F401 - re-exported
from ._ops import apply as fused_apply
from ._ops import handles as fused_handles
from ._simd import VECTOR_BYTES
from ._sparse import ell_rows

__all__ = ["fwht", "hadamard", "ell_matvec", "aligned_empty", "fused_apply", "fused_handles", "PARALLEL_MIN"]

#: below this many elements one thread is faster than waking the others
PARALLEL_MIN = 1 << 18
#: a single row at least this long is transformed by all threads (shorter rows: one thread)
PARALLEL_ROW_MIN = 1 << 17
_NO_SIGNS = {np.dtype(np.float32): empty_signs(np.float32),
             np.dtype(np.float64): empty_signs(np.float64)}

#: longest run of a Kronecker gather reordered at once (elements; 16 KiB of float64)
RUN_MAX = 1 << 11
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_local = threading.local()


def _threads(elements: int) -> int:
    return 1 if elements < PARALLEL_MIN else numba.get_num_threads()


# ---- fwht ---------------------------------------------------------------------------------------
def _check_out(out, x) -> np.ndarray:
    if out is not x and (not isinstance(out, np.ndarray) or out.shape != x.shape
                         or out.dtype != x.dtype):
        raise ValueError(
            f"fwht: out must be a numpy array of the input's shape {x.shape} and dtype {x.dtype}, "
            f"got {type(out).__name__} {getattr(out, 'shape', '')} "
            f"{getattr(out, 'dtype', '')}; pass out=None for a new array."
        )
    flags = out.flags
    if not flags.c_contiguous or not flags.writeable:
        raise ValueError("fwht: out must be a writeable C-contiguous array (pass out=None for a "
                         "new array).")
    if out is not x and np.may_share_memory(out, x):
        raise ValueError("fwht: out overlaps x without being x; pass out=x to transform in place "
                         "or a separate array.")
    return out


def fwht(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Unnormalized Walsh-Hadamard transform of the last axis (Sylvester order), into ``out``
    (a new 64-byte aligned array when None; ``out=x`` transforms in place)."""
    shape = x.shape
    if not shape:
        raise ValueError("fwht needs an array with a last axis, got a 0-d array.")
    n = shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(
            f"the Walsh-Hadamard transform needs a power-of-two length on the last axis, got {n}; "
            "the sketches pad automatically (sketchcore.kernels.pad_last pads by hand)."
        )
    y = aligned_empty(shape, x.dtype) if out is None else _check_out(out, x)
    size = x.size
    if size == 0:
        return y
    src = x if x.flags.c_contiguous else np.ascontiguousarray(x)
    if len(shape) != 1:
        y1, src = y.reshape(-1), src.reshape(-1)
    else:
        y1 = y
    if size < PARALLEL_MIN:
        fwht_plain(y1, src, size // n, n)
    else:
        bits, lut = _NO_SIGNS[x.dtype]
        fwht_flat(y1, src, size // n, n, bits, lut, False)
    return y


def fwht_flat(dst, src, rows, n, bits, lut, signs) -> None:
    """The transform of ``rows`` contiguous rows of length ``n`` (flat arrays), on as many
    threads as the work is worth: rows in parallel, or one long row split inside."""
    threads = _threads(rows * n)
    if threads > 1 and rows >= 2:
        fwht_rows(dst, src, rows, n, bits, lut, signs, min(threads, rows))
    elif threads > 1 and n >= PARALLEL_ROW_MIN:
        for r in range(rows):
            fwht_row_parallel(dst, r * n, src, r * n, n, bits, 0, lut, signs, threads)
    else:
        fwht_rows_serial(dst, src, rows, n, bits, lut, signs)


# ---- hadamard -----------------------------------------------------------------------------------
class _Gather:
    """A Kronecker gather ``pi(j) = hi[j >> t] + lo[j & (2^t - 1)]`` (see ``_hadamard``).

    ``t`` is a factor boundary with runs of ``2^t <= RUN_MAX`` elements (a run is reordered
    inside L1): the largest one below which no factor is permuted (runs then move as vectors),
    else the largest one. Only a factor longer than ``RUN_MAX`` forces longer runs."""

    def __init__(self, sizes, perms):
        # a factor without a permutation can be cut at any bit: split it into factors of 2
        fs, ps = [], []
        for size, p in zip(sizes, perms):
            bits = int(size).bit_length() - 1
            if p is None:
                fs += [2] * bits
                ps += [None] * bits
            elif bits:
                fs.append(int(size))
                ps.append(p)
        self.identity = all(p is None for p in ps)
        bounds = [0]  # factor boundaries, counted from the right
        for size in reversed(fs):
            bounds.append(bounds[-1] + (size.bit_length() - 1))
        total = bounds[-1]
        lanes_log = (VECTOR_BYTES // 4).bit_length() - 1
        fits = [k for k, t in enumerate(bounds) if (1 << t) <= RUN_MAX]
        plain = [k for k in fits if all(p is None for p in ps[len(fs) - k :])
                 and bounds[k] >= min(lanes_log, total)]
        if plain:
            k = plain[-1]
        elif len(fits) > 1:
            k = fits[-1]
        else:  # the last factor alone is longer than RUN_MAX: the smallest tables
            k = min(range(len(bounds)), key=lambda i: (1 << bounds[i]) + (1 << (total - bounds[i])))
        t = bounds[k]
        cut = len(fs) - k
        self.t = t
        self.lo_id = all(p is None for p in ps[cut:])
        self.hi = (_kron_index(fs[:cut], ps[:cut]) << t).astype(np.int64)
        self.lo = _kron_index(fs[cut:], ps[cut:]).astype(np.int32)


def _kron_index(sizes, perms) -> np.ndarray:
    idx = np.zeros(1, dtype=np.int64)
    for size, p in zip(sizes, perms):
        size = int(size)
        q = np.arange(size, dtype=np.int64) if p is None else np.asarray(p, dtype=np.int64)
        idx = (idx[:, None] * size + q[None, :]).ravel()
    return idx


def _tables(plan):
    tabs = _TABLES.get(plan)
    if tabs is None:
        for size in plan.sizes:
            if size < 1 or size & (size - 1):
                raise ValueError(
                    f"Hadamard factor sizes must be powers of two, got {tuple(plan.sizes)}; build "
                    "the KronPlan with power-of-two sizes (sketchcore.kron_plans.pow2_factors).")
        tabs = (_Gather(plan.sizes, plan.col_perm), _Gather(plan.sizes, plan.row_perm))
        _TABLES[plan] = tabs
    return tabs


def _row_scratch(dtype, size) -> np.ndarray:
    """Per-thread scratch for row-permuted transforms, reused across calls."""
    key = np.dtype(dtype).char
    buf = getattr(_local, key, None)
    if buf is None or buf.size < size:
        buf = aligned_empty((size,), dtype)
        if buf.nbytes <= 256 << 20:
            setattr(_local, key, buf)
    return buf[:size]


def hadamard(x: np.ndarray, plan, diag) -> np.ndarray:
    """``M (diag * x)`` for the normalized permuted Kronecker Hadamard ``M`` of ``plan``."""
    if x.ndim == 0 or x.shape[-1] != plan.n:
        raise ValueError(
            f"hadamard: the last axis of x (shape {x.shape}) must have the plan's length {plan.n} "
            f"(factor sizes {plan.sizes}); pad x or build the plan for its length."
        )
    n = plan.n
    scale = 1.0 / float(n) ** 0.5
    d = None
    if diag is not None:
        d = np.asarray(diag)
        if d.dtype != x.dtype:
            d = d.astype(x.dtype)
        if d.ndim == 0:
            scale *= float(d)
            d = None
        elif d.shape != (n,):
            x = np.multiply(x, d)  # a batched diagonal: apply it first (broadcasting as numpy)
            d = None
        else:
            d = np.ascontiguousarray(d)
    out = aligned_empty(x.shape, x.dtype)
    if x.size == 0:
        return out
    cols, rows_g = _tables(plan)
    xf = np.ascontiguousarray(x).reshape(-1)
    of = out.reshape(-1)
    rows = x.size // n
    use_diag = d is not None
    dd = d if use_diag else xf[:1]
    sc = x.dtype.type(scale)
    threads = _threads(x.size)
    if rows_g.identity:
        _transform(of, xf, rows, n, dd, use_diag, sc, cols, threads)
        return out
    # row permutations: transform into scratch, a few rows at a time, then gather
    chunk = max(1, min(rows, threads))
    F = _row_scratch(x.dtype, chunk * n)
    for r0 in range(0, rows, chunk):
        r = min(chunk, rows - r0)
        _transform(F, xf[r0 * n : (r0 + r) * n], r, n, dd, use_diag, sc, cols, threads)
        workers = threads if r >= threads or n >= PARALLEL_ROW_MIN else r
        gather_rows(of[r0 * n : (r0 + r) * n], F, r, n, rows_g.hi, rows_g.lo, rows_g.t,
                    rows_g.lo_id, max(1, workers))
    return out


def _transform(F, xf, rows, n, d, use_diag, scale, g, threads):
    """``F = H P_col (d * x) * scale`` for ``rows`` flat rows."""
    lanes = VECTOR_BYTES // F.itemsize
    if threads > 1 and rows < threads and n >= PARALLEL_ROW_MIN and n >= 8 * lanes:
        blog = (16384 // F.itemsize).bit_length() - 1
        lg = n.bit_length() - 1
        rest = lg - min(lg, blog)
        if rest > 0:
            top = 8 if rest >= 3 else 1 << rest
            sub = n // top
            for r in range(rows):
                had_row_parallel_load(F, r * n, sub, top, xf, r * n, d, use_diag, scale, g.hi,
                                      g.lo, g.t, g.lo_id, min(threads, top))
                had_top_level(F, r * n, sub, top, threads)
            return
    had_rows(F, xf, rows, n, d, use_diag, scale, g.hi, g.lo, g.t, g.lo_id,
             max(1, min(threads, rows)))


# ---- ell_matvec ---------------------------------------------------------------------------------
def _rows(x: np.ndarray) -> np.ndarray:
    """``x`` as a C-contiguous ``(rows, n)`` array (a copy only when ``x`` is not contiguous)."""
    n = x.shape[-1]
    return np.ascontiguousarray(x).reshape(-1, n)


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
