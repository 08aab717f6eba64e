"""In-cache Walsh-Hadamard transforms of one buffer (serial; the passes run them in parallel).

* ``wht_columns(buf, rows, width)``: the transform of length ``rows`` down every column of a
  row-major ``rows x width`` buffer. Radix-8 stages (then one radix-4 or radix-2) whose inner loop
  runs over the columns a vector at a time, so every stage, h = 1 included, is SIMD.
* ``wht_vector(buf, n)``: the transform of one contiguous vector of length ``n``. Since
  ``H_n = H_{n/L} x H_L`` (L the vector lanes), the ``n/L x L`` view takes ``wht_columns`` for
  the strides >= L and an in-register shuffle transform for the strides < L.
"""

from __future__ import annotations

import numba as nb

from ._simd import VECTOR_BYTES, bfly2, bfly4, bfly8, bfly_lanes

__all__ = ["wht_columns", "wht_vector", "JIT"]

#: options shared by every kernel of this package
JIT = dict(cache=True, nogil=True, error_model="numpy")


@nb.njit(**JIT)
def _scalar_stage(buf, r, s, width, radix):
    """``log2 radix`` stages on the single columns ``r .. r + width - 1`` (those left over after
    the whole vectors), rows ``s`` apart."""
    for t in range(width):
        i = r + t
        h = 1
        while h < radix:
            for base in range(0, radix, 2 * h):
                for j in range(base, base + h):
                    a = buf[i + j * s]
                    b = buf[i + (j + h) * s]
                    buf[i + j * s] = a + b
                    buf[i + (j + h) * s] = a - b
            h *= 2


@nb.njit(**JIT)
def wht_columns(buf, rows, width):
    """Unnormalized WHT of length ``rows`` down each column of ``buf[:rows*width]`` (row-major
    ``rows x width``), in place."""
    lanes = VECTOR_BYTES // buf.itemsize
    full = width - width % lanes
    rest = width - full
    h = 1
    while h < rows:
        radix = 8 if h * 8 <= rows else (4 if h * 4 <= rows else 2)
        s = h * width
        for blk in range(0, rows, radix * h):
            for j in range(blk, blk + h):
                r = j * width
                if radix == 8:
                    for t in range(0, full, lanes):
                        bfly8(buf, r + t, s)
                elif radix == 4:
                    for t in range(0, full, lanes):
                        bfly4(buf, r + t, s)
                else:
                    for t in range(0, full, lanes):
                        bfly2(buf, r + t, s)
                if rest:
                    _scalar_stage(buf, r + full, s, rest, radix)
        h *= radix


@nb.njit(**JIT)
def wht_vector(buf, n):
    """Unnormalized WHT of the contiguous ``buf[:n]`` (n a power of two), in place."""
    lanes = VECTOR_BYTES // buf.itemsize
    if n < lanes:
        wht_columns(buf, n, 1)
        return
    wht_columns(buf, n // lanes, lanes)
    for i in range(0, n, lanes):
        bfly_lanes(buf, i)
