"""Running a planned Kronecker Hadamard transform on numpy arrays (the host side of the passes)."""

from __future__ import annotations

import numba
import numpy as np

from ._passes import column_pass, column_pass_serial, row_pass, row_pass_serial
from ._schedule import PANEL_BYTES, Pass
from ._simd import VECTOR_BYTES

__all__ = ["run_passes", "PARALLEL_MIN"]

#: below this many elements one thread is faster than waking the others (about 2^17 per thread)
PARALLEL_MIN = 1 << 18


def _workers(units: int, elements: int) -> int:
    if elements < PARALLEL_MIN:
        return 1
    return max(1, min(numba.get_num_threads(), units))


def _panel(p: Pass, a_total: int, itemsize: int) -> tuple[int, int]:
    """(ta, tc): a panel is ``ta`` a's by ``tc`` c's, about ``PANEL_BYTES`` and at least one
    vector wide."""
    lanes = VECTOR_BYTES // itemsize
    width = max(lanes, 1 << max(0, (PANEL_BYTES // (p.g * itemsize)).bit_length() - 1))
    tc = min(p.c, width)
    ta = max(1, min(a_total, width // tc))
    return ta, tc


def run_passes(x: np.ndarray, passes: list[Pass], diag: np.ndarray | None, scale: float):
    """``y = M (diag * x) * scale`` for C-contiguous ``x`` of shape ``(rows, n)``; a new array.

    The first pass reads ``x`` (and ``diag``) and writes ``y``; the others run in place on ``y``.
    """
    rows, n = x.shape
    y = np.empty_like(x)
    if x.size == 0:
        return y
    sc = x.dtype.type(scale)
    d = np.empty(0, dtype=x.dtype) if diag is None else diag
    if not passes:  # n == 1
        np.multiply(x, sc, out=y)
        if diag is not None:
            y *= diag
        return y
    src, dst = x.reshape(-1), y.reshape(-1)
    for k, p in enumerate(passes):
        first = k == 0
        a_row = n // (p.g * p.c)
        a_total = rows * a_row
        dk = d if first else d[:0]
        sk = sc if first else x.dtype.type(1)
        if p.c == 1:
            w = _workers(a_total, x.size)
            if w == 1:
                row_pass_serial(src, dst, a_total, p.g, p.colidx, p.rowidx, p.col_identity,
                                p.row_identity, dk, a_row, sk)
            else:
                row_pass(src, dst, a_total, p.g, p.colidx, p.rowidx, p.col_identity,
                         p.row_identity, dk, a_row, sk, w)
        else:
            ta, tc = _panel(p, a_total, x.itemsize)
            panels = -(-a_total // ta) * (p.c // tc)
            w = _workers(panels, x.size)
            if w == 1:
                column_pass_serial(src, dst, a_total, p.g, p.c, ta, tc, p.colidx, p.rowidx, dk,
                                   a_row, sk)
            else:
                column_pass(src, dst, a_total, p.g, p.c, ta, tc, p.colidx, p.rowidx, dk, a_row,
                            sk, w)
        src = dst
    return y
