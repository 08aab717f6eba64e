"""The Walsh-Hadamard transform of contiguous rows: cache-oblivious depth-first blocks of SIMD
butterflies, in place or out of place, serial, parallel over rows, or parallel inside one row.

A row of length ``n = 2^L`` is cut into base blocks of ``2^base`` elements (16 KiB, half of a
32 KiB L1 cache) that are transformed completely while they sit in L1: one sweep of ``head8``
(the in-register stages plus three across registers, 6 stages for float32 with AVX2) and one or
two radix-8/4 sweeps. The stages above the base block are radix-8 levels (a radix-2/4 level at the
bottom when ``L - base`` is not a multiple of 3) applied depth-first: as soon as the last of
eight blocks of a level is done, the eight are combined. Each level therefore sweeps data that
was just written and still sits in the cache of its size (L1, L2, L3, then memory), and memory
is read and written about twice whatever ``n`` (once for the base blocks, once for the top
level), with no scratch buffer at all. This is the structure of FFHT (FALCONN), written anew on
numba intrinsics.

Results are bitwise the same serial, parallel over rows and parallel inside a row: every element
goes through the same butterflies in the same order.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._simd import VECTOR_BYTES, bfly2, bfly4, bfly8, head1, head1_signs, head2, head2_signs
from ._simd import head4, head4_signs, head8, head8_signs

__all__ = [
    "JIT", "base_log2", "fwht_row", "fwht_rows", "fwht_rows_serial", "fwht_row_parallel",
    "fwht_small", "fwht_plain", "fwht_row_plain", "empty_signs",
]

#: options shared by every kernel of this package
JIT = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)

#: bytes of one base block: transformed completely inside the L1 data cache
BASE_BYTES = 1 << 14


def base_log2(itemsize: int) -> int:
    return (BASE_BYTES // itemsize).bit_length() - 1


@nb.njit(inline="always", **JIT)
def _log2(n):
    k = 0
    while (1 << k) < n:
        k += 1
    return k


@nb.njit(inline="always", **JIT)
def _sweep(buf, start, size, h, radix, lanes, c_lo, c_hi):
    """One radix level on ``buf[start : start + size]``: butterflies of rows ``h`` apart, for
    the column offsets ``c_lo .. c_hi - 1`` (multiples of ``lanes``) inside each group."""
    for blk in range(start, start + size, radix * h):
        if radix == 8:
            for j in range(blk + c_lo, blk + c_hi, lanes):
                bfly8(buf, j, h)
        elif radix == 4:
            for j in range(blk + c_lo, blk + c_hi, lanes):
                bfly4(buf, j, h)
        else:
            for j in range(blk + c_lo, blk + c_hi, lanes):
                bfly2(buf, j, h)


@nb.njit(inline="always", **JIT)
def _heads_plain(dst, d0, src, s0, size, lanes):
    """The first sweep of a base block of ``size >= lanes`` elements, ``src`` -> ``dst``: the
    in-register stages and up to three stages across registers."""
    k = size // lanes
    if k >= 8:
        for i in range(0, size, 8 * lanes):
            head8(dst, d0 + i, src, s0 + i)
    elif k == 4:
        head4(dst, d0, src, s0)
    elif k == 2:
        head2(dst, d0, src, s0)
    else:
        head1(dst, d0, src, s0)


@nb.njit(inline="always", **JIT)
def _heads_signed(dst, d0, src, s0, size, lanes, bits, p0, lut):
    """``_heads_plain`` of ``src`` with the signs of positions ``p0 ..`` flipped by ``bits``."""
    k = size // lanes
    if k >= 8:
        for i in range(0, size, 8 * lanes):
            head8_signs(dst, d0 + i, src, s0 + i, bits, p0 + i, lut)
    elif k == 4:
        head4_signs(dst, d0, src, s0, bits, p0, lut)
    elif k == 2:
        head2_signs(dst, d0, src, s0, bits, p0, lut)
    else:
        head1_signs(dst, d0, src, s0, bits, p0, lut)


@nb.njit(inline="always", **JIT)
def _block_levels(dst, d0, size, lanes):
    """The stages of a base block above its first sweep (in place, in L1)."""
    h = 8 * lanes
    while h < size:
        r = size // h
        radix = 8 if r >= 8 else r
        _sweep(dst, d0, size, h, radix, lanes, 0, h)
        h *= radix


@nb.njit(inline="always", **JIT)
def _base_block_plain(dst, d0, src, s0, size, lanes):
    _heads_plain(dst, d0, src, s0, size, lanes)
    _block_levels(dst, d0, size, lanes)


@nb.njit(inline="always", **JIT)
def _base_block(dst, d0, src, s0, size, lanes, bits, p0, lut, signs):
    if signs:
        _heads_signed(dst, d0, src, s0, size, lanes, bits, p0, lut)
    else:
        _heads_plain(dst, d0, src, s0, size, lanes)
    _block_levels(dst, d0, size, lanes)


@nb.njit(inline="always", **JIT)
def _combine(dst, d0, n, end, bsize, r0, lanes):
    """The depth-first levels that complete when the base block ending at ``end`` is done."""
    g = bsize
    radix = r0
    while g < n:
        big = g * radix
        if end % big:
            break
        _sweep(dst, d0 + end - big, big, g, radix, lanes, 0, g)
        g = big
        radix = 8


@nb.njit(inline="always", **JIT)
def _plan(n, lanes, blog):
    """(base block size, radix of the lowest level above it) for a row of ``n >= lanes``."""
    lg = _log2(n)
    b = min(lg, blog)
    rest = lg - b
    r0 = 1 << (rest % 3) if rest % 3 else 8
    return 1 << b, r0


@nb.njit(inline="always", **JIT)
def _scalar_stages(dst, d0, n):
    h = 1
    while h < n:
        for blk in range(d0, d0 + n, 2 * h):
            for j in range(blk, blk + h):
                a = dst[j]
                b = dst[j + h]
                dst[j] = a + b
                dst[j + h] = a - b
        h *= 2


@nb.njit(**JIT)
def fwht_small(dst, d0, src, s0, n, bits, p0, signs):
    """Rows shorter than one vector: scalar butterflies (``dst`` may be ``src``)."""
    for i in range(n):
        v = src[s0 + i]
        if signs and (bits[(p0 + i) >> 3] >> ((p0 + i) & 7)) & 1:
            v = -v
        dst[d0 + i] = v
    _scalar_stages(dst, d0, n)


@nb.njit(**JIT)
def fwht_row(dst, d0, src, s0, n, bits, p0, lut, signs):
    """``dst[d0 : d0 + n] = H (signs * src[s0 : s0 + n])`` (unnormalized, Sylvester order),
    serial, depth-first. ``dst`` may be ``src`` at the same offset (in place)."""
    lanes = VECTOR_BYTES // dst.itemsize
    if n < lanes:
        fwht_small(dst, d0, src, s0, n, bits, p0, signs)
        return
    bsize, r0 = _plan(n, lanes, _log2(BASE_BYTES // dst.itemsize))
    for blk in range(n // bsize):
        off = blk * bsize
        _base_block(dst, d0 + off, src, s0 + off, bsize, lanes, bits, p0 + off, lut, signs)
        _combine(dst, d0, n, off + bsize, bsize, r0, lanes)


@nb.njit(**JIT)
def fwht_row_plain(dst, d0, src, s0, n):
    """``fwht_row`` without signs (no sign arguments to type)."""
    lanes = VECTOR_BYTES // dst.itemsize
    if n < lanes:
        for i in range(n):
            dst[d0 + i] = src[s0 + i]
        _scalar_stages(dst, d0, n)
        return
    bsize, r0 = _plan(n, lanes, _log2(BASE_BYTES // dst.itemsize))
    for blk in range(n // bsize):
        off = blk * bsize
        _base_block_plain(dst, d0 + off, src, s0 + off, bsize, lanes)
        _combine(dst, d0, n, off + bsize, bsize, r0, lanes)


@nb.njit(parallel=True, **JIT)
def fwht_rows(dst, src, rows, n, bits, lut, signs, workers):
    """Rows ``0 .. rows-1`` of C-contiguous ``(rows, n)`` data (flattened), rows split among
    ``workers`` threads; each row serial."""
    for w in nb.prange(workers):
        for r in range(w * rows // workers, (w + 1) * rows // workers):
            fwht_row(dst, r * n, src, r * n, n, bits, 0, lut, signs)


@nb.njit(parallel=True, **JIT)
def _sub_blocks(dst, d0, src, s0, sub, count, bits, p0, lut, signs, workers):
    for w in nb.prange(workers):
        for i in range(w * count // workers, (w + 1) * count // workers):
            fwht_row(dst, d0 + i * sub, src, s0 + i * sub, sub, bits, p0 + i * sub, lut, signs)


@nb.njit(parallel=True, **JIT)
def _top_level(dst, d0, sub, radix, workers):
    lanes = VECTOR_BYTES // dst.itemsize
    cols = sub // lanes
    for w in nb.prange(workers):
        lo = w * cols // workers * lanes
        hi = (w + 1) * cols // workers * lanes
        _sweep(dst, d0, sub * radix, sub, radix, lanes, lo, hi)


def fwht_row_parallel(dst, d0, src, s0, n, bits, p0, lut, signs, workers):
    """One long row on ``workers`` threads: the top level's sub-blocks in parallel, then the top
    level split by columns. Same butterflies, same order as ``fwht_row``."""
    lanes = VECTOR_BYTES // dst.itemsize
    blog = base_log2(dst.itemsize)
    lg = n.bit_length() - 1
    rest = lg - min(lg, blog)
    if n < 8 * lanes or rest == 0:
        fwht_row(dst, d0, src, s0, n, bits, p0, lut, signs)
        return
    top = 8 if rest >= 3 or rest % 3 == 0 else 1 << (rest % 3)
    sub = n // top
    _sub_blocks(dst, d0, src, s0, sub, top, bits, p0, lut, signs, min(workers, top))
    _top_level(dst, d0, sub, top, workers)


def empty_signs(dtype) -> tuple[np.ndarray, np.ndarray]:
    """Placeholder ``bits`` and ``lut`` arrays for unsigned transforms (one compiled signature)."""
    ity = np.uint32 if np.dtype(dtype).itemsize == 4 else np.uint64
    return np.zeros(1, dtype=np.uint8), np.zeros((1, 1), dtype=ity)


@nb.njit(**JIT)
def fwht_rows_serial(dst, src, rows, n, bits, lut, signs):
    """``fwht_rows`` on the calling thread (work too small to wake the others)."""
    for r in range(rows):
        fwht_row(dst, r * n, src, r * n, n, bits, 0, lut, signs)


@nb.njit(**JIT)
def fwht_plain(dst, src, rows, n):
    """Unsigned rows on the calling thread, with few arguments (the cheapest call for short
    rows, where the call itself is a good part of the cost)."""
    for r in range(rows):
        fwht_row_plain(dst, r * n, src, r * n, n)
