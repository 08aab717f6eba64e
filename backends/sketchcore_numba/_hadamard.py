"""The permuted Kronecker Hadamard ``M (diag * x)`` of a ``KronPlan`` on contiguous rows,
``M = P_row H P_col / sqrt(n)``, on the depth-first FWHT of ``_fwht``.

* ``P_col``, the diagonal and the scale are fused into the loads of each base block: the block's
  ``2^base`` inputs are gathered straight into the (L1-resident) output block, multiplied, and
  transformed there, so the input is read once and never copied.
* ``P_row`` is one gather pass from the transformed row (kept in per-thread scratch) into the
  output. Rows without row permutations are transformed in their output directly.

A Kronecker gather ``pi(j) = sum_i p_i(digit_i(j)) stride_i`` is split at a factor boundary
``t``: ``pi(j) = hi[j >> t] + lo[j & (2^t - 1)]``, two small tables instead of one of length n;
when the factors below ``t`` are not permuted, ``lo`` is the identity and the gathers move whole
contiguous runs as vectors.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._fwht import (BASE_BYTES, JIT, _base_block_plain, _combine, _log2, _plan, _scalar_stages,
                    _sweep)
from ._simd import VECTOR_BYTES, prefetch, vcopy, vscale, vscale_diag

__all__ = ["had_rows", "had_row_parallel_load", "had_top_level", "gather_rows", "fwht_row_load"]


@nb.njit(inline="always", **JIT)
def _move_run(dst, d0, src, s0, count, diag, k0, use_diag, scale, lanes):
    """``dst[d0 + i] = scale * diag[k0 + i] * src[s0 + i]`` (no diag unless ``use_diag``)."""
    full = count - count % lanes
    if use_diag:
        for i in range(0, full, lanes):
            vscale_diag(dst, d0 + i, src, s0 + i, diag, k0 + i, scale)
        for i in range(full, count):
            dst[d0 + i] = src[s0 + i] * (diag[k0 + i] * scale)
    else:
        for i in range(0, full, lanes):
            vscale(dst, d0 + i, src, s0 + i, scale)
        for i in range(full, count):
            dst[d0 + i] = src[s0 + i] * scale


@nb.njit(inline="always", **JIT)
def _load(F, f0, size, p0, x, x0, diag, use_diag, scale, hi, lo, t, lo_id, tmp, p_lim):
    """``F[f0 + i] = scale * diag[k] * x[x0 + k]`` with ``k = pi(p0 + i)``, ``i < size``.

    Whole runs of ``2^t`` sources are read in order (vector loads the prefetchers follow); a
    permuted run goes through ``tmp`` and is reordered from there, inside L1."""
    lanes = VECTOR_BYTES // F.itemsize
    run = 1 << t
    mask = run - 1
    if run <= size:
        if run < 4096 // F.itemsize and p0 + 2 * size <= p_lim:
            # runs scattered over memory: start fetching the next block's runs now
            for i in range(0, size, run):
                k = x0 + hi[(p0 + size + i) >> t]
                for c in range(0, run, 64 // F.itemsize):
                    prefetch(x, k + c)
        for i in range(0, size, run):
            k = hi[(p0 + i) >> t]
            if lo_id:
                _move_run(F, f0 + i, x, x0 + k, run, diag, k, use_diag, scale, lanes)
            else:
                _move_run(tmp, 0, x, x0 + k, run, diag, k, use_diag, scale, lanes)
                for j in range(run):
                    F[f0 + i + j] = tmp[lo[j]]
    else:  # the block is a part of one run
        k = hi[p0 >> t]
        if lo_id:
            _move_run(F, f0, x, x0 + k + (p0 & mask), size, diag, k + (p0 & mask), use_diag,
                      scale, lanes)
        else:
            for i in range(size):
                j = k + lo[(p0 + i) & mask]
                if use_diag:
                    F[f0 + i] = x[x0 + j] * (diag[j] * scale)
                else:
                    F[f0 + i] = x[x0 + j] * scale


@nb.njit(**JIT)
def fwht_row_load(F, f0, n, p0, x, x0, diag, use_diag, scale, hi, lo, t, lo_id, p_lim):
    """``F[f0 : f0 + n] = H (loaded inputs of positions p0 ..)``, depth-first like
    ``fwht_row`` with each base block gathered by ``_load`` first (``p_lim``: the row's
    length, the end of the positions that may be prefetched)."""
    lanes = VECTOR_BYTES // F.itemsize
    tmp = np.empty(1 if lo_id else min(1 << t, n), dtype=F.dtype)
    if n < lanes:
        _load(F, f0, n, p0, x, x0, diag, use_diag, scale, hi, lo, t, lo_id, tmp, p_lim)
        _scalar_stages(F, f0, n)
        return
    bsize, r0 = _plan(n, lanes, _log2(BASE_BYTES // F.itemsize))
    for blk in range(n // bsize):
        off = blk * bsize
        _load(F, f0 + off, bsize, p0 + off, x, x0, diag, use_diag, scale, hi, lo, t, lo_id, tmp,
              p_lim)
        _base_block_plain(F, f0 + off, F, f0 + off, bsize, lanes)
        _combine(F, f0, n, off + bsize, bsize, r0, lanes)


@nb.njit(inline="always", **JIT)
def _gather(out, o0, F, f0, lo_pos, hi_pos, hi, lo, t, lo_id, tmp):
    """``out[o0 + j - lo_pos] = F[f0 + pi(j)]`` for ``lo_pos <= j < hi_pos``: whole source runs
    are read in order, permuted runs reordered through ``tmp``."""
    lanes = VECTOR_BYTES // F.itemsize
    run = 1 << t
    mask = run - 1
    ahead = 8 * run  # prefetch distance (elements) when runs are short and scattered
    pf = run < 4096 // F.itemsize
    j = lo_pos
    while j < hi_pos:
        stop = min(hi_pos, (j | mask) + 1)
        if pf and j + ahead < hi_pos and (j & mask) == 0:
            kn = f0 + hi[(j + ahead) >> t]
            for c in range(0, run, 64 // F.itemsize):
                prefetch(F, kn + c)
        k = hi[j >> t]
        if lo_id:
            count = stop - j
            full = count - count % lanes
            for i in range(0, full, lanes):
                vcopy(out, o0 + j - lo_pos + i, F, f0 + k + (j & mask) + i)
            for i in range(full, count):
                out[o0 + j - lo_pos + i] = F[f0 + k + (j & mask) + i]
        elif stop - j == run:
            count = run - run % lanes
            for i in range(0, count, lanes):
                vcopy(tmp, i, F, f0 + k + i)
            for i in range(count, run):
                tmp[i] = F[f0 + k + i]
            for i in range(run):
                out[o0 + j - lo_pos + i] = tmp[lo[i]]
        else:
            for i in range(j, stop):
                out[o0 + i - lo_pos] = F[f0 + k + lo[i & mask]]
        j = stop


@nb.njit(parallel=True, **JIT)
def gather_rows(out, F, rows, n, hi, lo, t, lo_id, workers):
    """``out[r, j] = F[r, pi(j)]`` for flat ``(rows, n)`` arrays, rows among workers; a single
    row is split into position ranges."""
    run = 1 if lo_id else 1 << t
    if rows >= workers:
        for w in nb.prange(workers):
            tmp = np.empty(run, dtype=F.dtype)
            for r in range(w * rows // workers, (w + 1) * rows // workers):
                _gather(out, r * n, F, r * n, 0, n, hi, lo, t, lo_id, tmp)
    else:
        lanes = VECTOR_BYTES // F.itemsize
        for r in range(rows):
            for w in nb.prange(workers):
                tmp = np.empty(run, dtype=F.dtype)
                a = (w * n // workers) // lanes * lanes
                b = n if w == workers - 1 else ((w + 1) * n // workers) // lanes * lanes
                _gather(out, r * n + a, F, r * n, a, b, hi, lo, t, lo_id, tmp)


@nb.njit(parallel=True, **JIT)
def had_rows(F, x, rows, n, diag, use_diag, scale, hi, lo, t, lo_id, workers):
    """Rows of ``F = H P_col (diag * x) * scale`` (flat ``(rows, n)``), rows among workers."""
    for w in nb.prange(workers):
        for r in range(w * rows // workers, (w + 1) * rows // workers):
            fwht_row_load(F, r * n, n, 0, x, r * n, diag, use_diag, scale, hi, lo, t, lo_id, n)


@nb.njit(parallel=True, **JIT)
def had_row_parallel_load(F, f0, sub, count, x, x0, diag, use_diag, scale, hi, lo, t, lo_id,
                          workers):
    """The ``count`` sub-blocks of one long row, loaded and transformed in parallel."""
    for w in nb.prange(workers):
        for i in range(w * count // workers, (w + 1) * count // workers):
            fwht_row_load(F, f0 + i * sub, sub, i * sub, x, x0, diag, use_diag, scale, hi, lo,
                          t, lo_id, sub * count)


@nb.njit(parallel=True, **JIT)
def had_top_level(F, f0, sub, radix, workers):
    lanes = VECTOR_BYTES // F.itemsize
    cols = sub // lanes
    for w in nb.prange(workers):
        _sweep(F, f0, sub * radix, sub, radix, lanes, w * cols // workers * lanes,
               (w + 1) * cols // workers * lanes)
