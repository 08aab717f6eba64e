"""Fused forward kernels of affd and afjl (Hadamard preconditioner): each sketch is one pass over
its input plus in-cache work, instead of a chain of full-length transforms, gathers and products.

Notation (see ``_ops`` for the derivations): ``F = H (B * x)`` the unnormalized transform of the
sign-flipped (zero-padded) row, ``N`` its length, ``D`` the kept outputs.

* affd: ``y = c H_D2( fold( sum_K w_K * F_K ) )``: after one full FWHT (signs fused into its first
  sweep), every block ``F_K`` of ``L`` contiguous outputs is multiplied by the matching block of the
  pre-permuted Gaussian diagonal ``w`` and added into accumulator block ``T[K]`` (an in-cache
  ``D``-sized buffer): the second transform, its in-factor permutations, the Gaussian diagonal and
  the truncation ``R_D`` together cost one streaming multiply-add, then a transform of size D.
* afjl: only the ``D`` kept coordinates of ``F`` are computed. They fall into ``m`` blocks of ``L``
  contiguous outputs of ``F``; block ``K`` is ``H_L`` of the signed sum ``sum_K' (-1)^<K,K'> v_K'``
  of the rows of ``v = B * x`` seen as ``(N/L, L)``. Rows are combined ``2^a`` at a time with a
  radix-``2^a`` butterfly in registers, which leaves ``m / 2^a`` signed adds per element.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._fwht import BASE_BYTES, JIT, _log2, fwht_row
from ._simd import VECTOR_BYTES, bfly2_acc, bfly4_acc, bfly8_acc, srad1, srad2, srad4, srad8
from ._simd import vaxpy, vfma

__all__ = [
    "affd_rows", "affd_row_parallel", "affd_can_split", "afjl_rows", "afjl_row_parallel",
    "copy_padded",
]


@nb.njit(inline="always", **JIT)
def _load_padded(buf, x, x0, valid, n):
    for i in range(valid):
        buf[i] = x[x0 + i]
    for i in range(valid, n):
        buf[i] = 0.0


# ---- affd ---------------------------------------------------------------------------------------
@nb.njit(inline="always", **JIT)
def _top_split(n, itemsize):
    """(radix, sub-block length) of the last level of ``fwht_row`` for length ``n`` (radix 1:
    the row is a single base block)."""
    lanes = VECTOR_BYTES // itemsize
    if n < 8 * lanes:
        return 1, n
    lg = _log2(n)
    rest = lg - min(lg, _log2(BASE_BYTES // itemsize))
    if rest == 0:
        return 1, n
    top = 8 if rest >= 3 else 1 << rest
    return top, n // top


@nb.njit(inline="always", **JIT)
def _fused_top(F, blk, n, itemsize):
    """Whether affd's last level can take the multiply-add: blocks of whole vectors that do not
    straddle the level's rows."""
    lanes = VECTOR_BYTES // itemsize
    top, sub = _top_split(n, itemsize)
    return top > 1 and blk >= lanes and blk <= sub


@nb.njit(inline="always", **JIT)
def _affd_top(acc, F, w, ttab, blk, sub, top, c_lo, c_hi, offs):
    """The last level of the transform (radix ``top`` at stride ``sub``) for the columns
    ``c_lo .. c_hi - 1``, its outputs multiplied by ``w`` and added into their accumulator
    blocks instead of being stored."""
    lanes = VECTOR_BYTES // F.itemsize
    lb = _log2(blk)
    mask = blk - 1
    for j in range(c_lo, c_hi, lanes):
        jl = j & mask
        if jl == 0 or j == c_lo:
            for t in range(top):
                offs[t] = ttab[(j + t * sub) >> lb] * blk
        if top == 8:
            bfly8_acc(F, j, sub, w, acc, offs, jl)
        elif top == 4:
            bfly4_acc(F, j, sub, w, acc, offs, jl)
        else:
            bfly2_acc(F, j, sub, w, acc, offs, jl)


@nb.njit(inline="always", **JIT)
def _affd_accumulate(acc, F, w, ttab, blk, k_lo, k_hi):
    """``acc[T[K]] += w_K * F_K`` for the blocks ``k_lo .. k_hi - 1`` of ``blk`` elements."""
    lanes = VECTOR_BYTES // F.itemsize
    for k in range(k_lo, k_hi):
        a0 = ttab[k] * blk
        f0 = k * blk
        if blk >= lanes:
            for i in range(0, blk, lanes):
                vfma(acc, a0 + i, F, f0 + i, w, f0 + i)
        else:
            for i in range(blk):
                acc[a0 + i] += F[f0 + i] * w[f0 + i]


@nb.njit(inline="always", **JIT)
def _affd_row(acc, F, x, x0, valid, n, bits, lut, w, ttab, blk, offs):
    """``acc += fold-ready sum_K w_K * (H (B x))_K`` for one row (``acc`` zeroed here)."""
    for i in range(acc.shape[0]):
        acc[i] = 0.0
    src, s0 = x, x0
    if valid < n:
        _load_padded(F, x, x0, valid, n)
        src, s0 = F, 0
    if _fused_top(F, blk, n, F.itemsize):
        top, sub = _top_split(n, F.itemsize)
        for i in range(top):
            fwht_row(F, i * sub, src, s0 + i * sub, sub, bits, i * sub, lut, True)
        _affd_top(acc, F, w, ttab, blk, sub, top, 0, sub, offs)
    else:
        fwht_row(F, 0, src, s0, n, bits, 0, lut, True)
        _affd_accumulate(acc, F, w, ttab, blk, 0, n // blk)


@nb.njit(inline="always", **JIT)
def _affd_finish(out, o0, acc, a, sig_lo, blk, nblk, d2, d, scale, bits, lut):
    """Fold the accumulator into ``a`` (undoing the last factors' permutation), ``H_D2``, scale,
    keep the first ``d``."""
    for i in range(d2):
        a[i] = 0.0
    for t in range(nblk):
        for r in range(blk):
            a[(t * blk + r) % d2] += acc[t * blk + sig_lo[r]]
    fwht_row(a, 0, a, 0, d2, bits, 0, lut, False)
    for q in range(d):
        out[o0 + q] = a[q] * scale


@nb.njit(parallel=True, **JIT)
def affd_rows(out, x, rows, in_dim, n, d, bits, lut, w, ttab, sig_lo, blk, nblk, d2, scale,
              scratch, acc_off, a_off, workers):
    """affd forward of ``rows`` rows (``x`` flat ``(rows, in_dim)``, ``out`` flat ``(rows, d)``),
    rows split among ``workers``. Row ``wk`` of ``scratch`` holds the transform ``F`` at 0, the
    accumulator at ``acc_off`` and the folded ``a`` at ``a_off``."""
    for wk in nb.prange(workers):
        F = scratch[wk, :n]
        acc = scratch[wk, acc_off : acc_off + nblk * blk]
        a = scratch[wk, a_off : a_off + d2]
        offs = np.empty(8, dtype=np.int64)
        for r in range(wk * rows // workers, (wk + 1) * rows // workers):
            _affd_row(acc, F, x, r * in_dim, in_dim, n, bits, lut, w, ttab, blk, offs)
            _affd_finish(out, r * d, acc, a, sig_lo, blk, nblk, d2, d, scale, bits, lut)


@nb.njit(parallel=True, **JIT)
def affd_row_parallel(out, o0, x, x0, in_dim, n, d, bits, lut, w, ttab, sig_lo, blk, nblk, d2,
                      scale, F, accs, a, workers):
    """One long row on ``workers`` threads: the sub-blocks of the transform in parallel, then
    its last level (fused with the multiply-add) split by columns, one accumulator per worker,
    summed at the end. Needs ``_fused_top``."""
    src, s0 = x, x0
    if in_dim < n:
        _load_padded(F, x, x0, in_dim, n)
        src, s0 = F, 0
    top, sub = _top_split(n, F.itemsize)
    for wk in nb.prange(workers):
        for i in range(wk * top // workers, (wk + 1) * top // workers):
            fwht_row(F, i * sub, src, s0 + i * sub, sub, bits, i * sub, lut, True)
    lanes = VECTOR_BYTES // F.itemsize
    cols = sub // lanes
    for wk in nb.prange(workers):
        acc = accs[wk]
        for i in range(acc.shape[0]):
            acc[i] = 0.0
        offs = np.empty(8, dtype=np.int64)
        _affd_top(acc, F, w, ttab, blk, sub, top, wk * cols // workers * lanes,
                  (wk + 1) * cols // workers * lanes, offs)
    acc = accs[0]
    for wk in range(1, workers):
        for i in range(acc.shape[0]):
            acc[i] += accs[wk, i]
    _affd_finish(out, o0, acc, a, sig_lo, blk, nblk, d2, d, scale, bits, lut)


@nb.njit(**JIT)
def affd_can_split(n, blk, itemsize):
    """Whether ``affd_row_parallel`` applies (the last level can take the multiply-add)."""
    lanes = VECTOR_BYTES // itemsize
    top, sub = _top_split(n, itemsize)
    return top > 1 and blk >= lanes and blk <= sub


# ---- afjl ---------------------------------------------------------------------------------------
@nb.njit(inline="always", **JIT)
def _parity_sign(v):
    v ^= v >> 32
    v ^= v >> 16
    v ^= v >> 8
    v ^= v >> 4
    v ^= v >> 2
    v ^= v >> 1
    return 1.0 - 2.0 * (v & 1)


@nb.njit(inline="always", **JIT)
def _afjl_sum(acc, stride_t, tmp, sgn, src, s0, blk, c, radix, kb_lo, kb_hi, ka, kbits, bits,
              lut):
    """``acc[t] += sum_{kb} (-1)^<Kb_t, kb> W[ka_t][kb]`` over ``kb_lo .. kb_hi - 1``, where
    ``W[.][kb]`` is the radix butterfly of the rows ``j 2^c + kb`` (j < radix) of ``B * src``;
    target ``t`` accumulates at ``acc[t * stride_t :]``."""
    lanes = VECTOR_BYTES // acc.itemsize
    m = ka.shape[0]
    stride = (1 << c) * blk
    for kb in range(kb_lo, kb_hi):
        for t in range(m):
            sgn[t] = _parity_sign(kbits[t] & kb)
        row = kb * blk
        for col in range(0, blk, lanes):
            p = row + col
            if radix == 8:
                srad8(tmp, 0, src, s0 + p, stride, bits, p, stride, lut)
            elif radix == 4:
                srad4(tmp, 0, src, s0 + p, stride, bits, p, stride, lut)
            elif radix == 2:
                srad2(tmp, 0, src, s0 + p, stride, bits, p, stride, lut)
            else:
                srad1(tmp, 0, src, s0 + p, stride, bits, p, stride, lut)
            for t in range(m):
                vaxpy(acc, t * stride_t + col, tmp, ka[t] * lanes, sgn[t])


@nb.njit(inline="always", **JIT)
def _afjl_finish(out, o0, acc, stride_t, blk, m, slot, coef, d, bits, lut):
    for t in range(m):
        fwht_row(acc, t * stride_t, acc, t * stride_t, blk, bits, 0, lut, False)
    for q in range(d):
        out[o0 + q] = coef[q] * acc[slot[q]]


@nb.njit(parallel=True, **JIT)
def afjl_rows(out, x, rows, in_dim, n, d, bits, lut, blk, c, radix, ka, kbits, slot, coef,
              scratch, stride_t, tmp_off, sgn_off, pad_off, workers):
    """afjl forward of ``rows`` rows. Row ``wk`` of ``scratch`` holds the ``m`` accumulators
    (``stride_t`` apart) at 0, the butterfly outputs at ``tmp_off``, the signs at ``sgn_off``
    and, when ``in_dim < n``, the zero-padded row at ``pad_off``."""
    lanes = VECTOR_BYTES // scratch.itemsize
    m = ka.shape[0]
    for wk in nb.prange(workers):
        acc = scratch[wk, : m * stride_t]
        tmp = scratch[wk, tmp_off : tmp_off + 8 * lanes]
        sgn = scratch[wk, sgn_off : sgn_off + m]
        pad = scratch[wk, pad_off : pad_off + n]
        for r in range(wk * rows // workers, (wk + 1) * rows // workers):
            for i in range(m * stride_t):
                acc[i] = 0.0
            if in_dim == n:
                _afjl_sum(acc, stride_t, tmp, sgn, x, r * in_dim, blk, c, radix, 0, 1 << c, ka,
                          kbits, bits, lut)
            else:
                _load_padded(pad, x, r * in_dim, in_dim, n)
                _afjl_sum(acc, stride_t, tmp, sgn, pad, 0, blk, c, radix, 0, 1 << c, ka, kbits,
                          bits, lut)
            _afjl_finish(out, r * d, acc, stride_t, blk, m, slot, coef, d, bits, lut)


@nb.njit(parallel=True, **JIT)
def afjl_row_parallel(out, o0, src, s0, blk, c, radix, ka, kbits, slot, coef, d, bits, lut,
                      accs, stride_t, tmps, workers):
    """One long row on ``workers`` threads: the row groups split among workers, one accumulator
    each, summed at the end (``src`` already zero-padded to the full length)."""
    m = ka.shape[0]
    nkb = 1 << c
    lanes = VECTOR_BYTES // accs.itemsize
    for wk in nb.prange(workers):
        acc = accs[wk]
        for i in range(acc.shape[0]):
            acc[i] = 0.0
        tmp = tmps[wk, : 8 * lanes]
        sgn = tmps[wk, 8 * lanes : 8 * lanes + m]
        _afjl_sum(acc, stride_t, tmp, sgn, src, s0, blk, c, radix, wk * nkb // workers,
                  (wk + 1) * nkb // workers, ka, kbits, bits, lut)
    acc = accs[0]
    for wk in range(1, workers):
        for i in range(acc.shape[0]):
            acc[i] += accs[wk, i]
    _afjl_finish(out, o0, acc, stride_t, blk, m, slot, coef, d, bits, lut)


@nb.njit(**JIT)
def copy_padded(buf, x, x0, valid, n):
    """``buf[:n] = x[x0 : x0 + valid]`` followed by zeros."""
    _load_padded(buf, x, x0, valid, n)
