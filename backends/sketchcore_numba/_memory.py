"""Aligned host buffers for the numba kernels (one module that both the plain kernels and the
fused passes import, so neither imports the other)."""

from __future__ import annotations

import numpy as np

__all__ = ["ALIGN", "ALIGN_MIN_BYTES", "aligned_empty"]

#: byte alignment of the arrays the kernels allocate: one cache line, so no vector load of a
#: transform ever straddles two lines (a 16-byte aligned numpy array makes half of them do so,
#: which costs in-place transforms 1.2-1.3x: docs/results.md, section 1b)
ALIGN = 64
#: results at least this large are allocated aligned (smaller ones: plain np.empty, cheaper)
ALIGN_MIN_BYTES = 1 << 16


def aligned_empty(shape, dtype, align: int = ALIGN) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose data starts on an ``align``-byte boundary (small arrays:
    plain ``np.empty``; the alignment only pays once the data leaves the L1 cache)."""
    dtype = np.dtype(dtype)
    count = 1
    for s in shape:
        count *= int(s)
    nbytes = count * dtype.itemsize
    if nbytes < ALIGN_MIN_BYTES and align == ALIGN:
        return np.empty(shape, dtype=dtype)
    raw = np.empty(nbytes + align, dtype=np.uint8)
    off = (-raw.__array_interface__["data"][0]) % align
    return raw[off : off + nbytes].view(dtype).reshape(shape)
