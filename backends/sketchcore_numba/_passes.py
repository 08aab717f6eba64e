"""The two passes that a Kronecker Walsh-Hadamard transform is made of (parallel, with serial
twins for work too small to be worth waking other threads).

The data (every vector of a batch, one after the other) is viewed as ``(A, G, C)`` in C order and
one pass applies ``P_row H_G P_col`` to the middle axis, where ``P_col`` / ``P_row`` gather rows by
``colidx`` before and by ``rowidx`` after the transform (buffer row j is source row ``colidx[j]``;
output row j is buffer row ``rowidx[j]``). The first pass of a transform also multiplies by
``diag * scale`` on the way in and reads the input, so the input is read once and never written;
later passes work in place on the output.

* ``column_pass`` (C > 1): a panel of ``G`` rows by ``tc`` consecutive columns (for ``ta``
  consecutive a's) is copied into a cache-resident buffer in contiguous runs, transformed down
  its columns with vector butterflies, and written back.
* ``row_pass`` (C = 1, the contiguous last factor): each length-G row is gathered into a buffer,
  transformed with ``wht_vector`` and scattered back.

Workers take contiguous ranges of panels or rows (``prange`` over workers, one buffer each).
``diag`` has length ``a_row * G * C`` (one vector, repeated over the batch) or 0 for none.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._simd import VECTOR_BYTES, vcopy, vscale, vscale_diag
from ._wht import JIT, wht_columns, wht_vector

__all__ = ["column_pass", "column_pass_serial", "row_pass", "row_pass_serial"]


@nb.njit(inline="always", **JIT)
def _load_run(buf, o, src, s0, diag, d0, scale, n, lanes):
    """``buf[o:o+n] = src[s0:s0+n] * diag[d0:d0+n] * scale`` (no diag when it is empty)."""
    full = n - n % lanes
    if diag.shape[0] > 0:
        for i in range(0, full, lanes):
            vscale_diag(buf, o + i, src, s0 + i, diag, d0 + i, scale)
        for i in range(full, n):
            buf[o + i] = src[s0 + i] * (diag[d0 + i] * scale)
    else:
        for i in range(0, full, lanes):
            vscale(buf, o + i, src, s0 + i, scale)
        for i in range(full, n):
            buf[o + i] = src[s0 + i] * scale


@nb.njit(inline="always", **JIT)
def _store_run(dst, d0, buf, o, n, lanes):
    full = n - n % lanes
    for i in range(0, full, lanes):
        vcopy(dst, d0 + i, buf, o + i)
    for i in range(full, n):
        dst[d0 + i] = buf[o + i]


@nb.njit(inline="always", **JIT)
def _column_panels(src, dst, a_total, g, c, ta, tc, colidx, rowidx, diag, a_row, scale, p_lo,
                   p_hi):
    """Panels ``p_lo .. p_hi - 1`` of a column pass, with one buffer."""
    lanes = VECTOR_BYTES // dst.itemsize
    n_cb = c // tc
    gc = g * c
    buf = np.empty(g * ta * tc, dtype=dst.dtype)
    for p in range(p_lo, p_hi):
        a0 = (p // n_cb) * ta
        c0 = (p % n_cb) * tc
        na = min(ta, a_total - a0)
        width = na * tc
        for ia in range(na):
            base = (a0 + ia) * gc + c0
            dbase = ((a0 + ia) % a_row) * gc + c0
            for j in range(g):
                k = colidx[j] * c
                _load_run(buf, j * width + ia * tc, src, base + k, diag, dbase + k, scale, tc,
                          lanes)
        wht_columns(buf, g, width)
        for ia in range(na):
            base = (a0 + ia) * gc + c0
            for j in range(g):
                _store_run(dst, base + j * c, buf, rowidx[j] * width + ia * tc, tc, lanes)


@nb.njit(parallel=True, **JIT)
def column_pass(src, dst, a_total, g, c, ta, tc, colidx, rowidx, diag, a_row, scale, workers):
    panels = (a_total + ta - 1) // ta * (c // tc)
    for w in nb.prange(workers):
        _column_panels(src, dst, a_total, g, c, ta, tc, colidx, rowidx, diag, a_row, scale,
                       w * panels // workers, (w + 1) * panels // workers)


@nb.njit(**JIT)
def column_pass_serial(src, dst, a_total, g, c, ta, tc, colidx, rowidx, diag, a_row, scale):
    panels = (a_total + ta - 1) // ta * (c // tc)
    _column_panels(src, dst, a_total, g, c, ta, tc, colidx, rowidx, diag, a_row, scale, 0,
                   panels)


@nb.njit(inline="always", **JIT)
def _rows(src, dst, g, colidx, rowidx, col_identity, row_identity, diag, a_row, scale, a_lo,
          a_hi):
    """Rows ``a_lo .. a_hi - 1`` of a row pass, with one buffer."""
    use_diag = diag.shape[0] > 0
    buf = np.empty(g, dtype=dst.dtype)
    for a in range(a_lo, a_hi):
        inp = src[a * g : a * g + g]
        d0 = (a % a_row) * g
        dg = diag[d0 : d0 + g] if use_diag else diag
        if col_identity:
            if use_diag:
                for j in range(g):
                    buf[j] = inp[j] * dg[j] * scale
            else:
                for j in range(g):
                    buf[j] = inp[j] * scale
        else:
            if use_diag:
                for j in range(g):
                    k = colidx[j]
                    buf[j] = inp[k] * dg[k] * scale
            else:
                for j in range(g):
                    buf[j] = inp[colidx[j]] * scale
        wht_vector(buf, g)
        out = dst[a * g : a * g + g]
        if row_identity:
            for j in range(g):
                out[j] = buf[j]
        else:
            for j in range(g):
                out[j] = buf[rowidx[j]]


@nb.njit(parallel=True, **JIT)
def row_pass(src, dst, a_total, g, colidx, rowidx, col_identity, row_identity, diag, a_row,
             scale, workers):
    for w in nb.prange(workers):
        _rows(src, dst, g, colidx, rowidx, col_identity, row_identity, diag, a_row, scale,
              w * a_total // workers, (w + 1) * a_total // workers)


@nb.njit(**JIT)
def row_pass_serial(src, dst, a_total, g, colidx, rowidx, col_identity, row_identity, diag,
                    a_row, scale):
    _rows(src, dst, g, colidx, rowidx, col_identity, row_identity, diag, a_row, scale, 0,
          a_total)
