"""Host-side schedule of the fused Hadamard kernels for one Kronecker plan (numpy only).

A plan ``M = (P_1 H_1 P'_1) x ... x (P_K H_K P'_K)`` acts on the bits of the flat index: factor i
owns a contiguous bit range (the last factor the lowest bits). Cut the bits at ``log_seg``, on a
boundary that no permuted factor straddles; then ``M = (P_hi H_hi P'_hi x I)(I x P_lo H_lo P'_lo)``,
so the tile kernel can do the whole low part (column gather, stages below ``log_seg``, row gather)
inside shared memory, taking its input segments from the high column permutation, and the radix
launches do the high stages, the last one placing whole segments by the high row permutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FusedSchedule", "schedule_for", "composed_perm", "MIN_LOG_SEG"]

#: below 32-element segments (128 bytes of floats) the segment gathers stop being coalesced (and
#: below 4 the in-segment gathers would split a 16-byte vector): such plans take the unfused
#: path (cupy gathers around the plain transform)
MIN_LOG_SEG = 5


@dataclass(frozen=True)
class FusedSchedule:
    """What the launches of one plan need. Index arrays are int32 numpy arrays or None."""

    log_n: int
    log_seg: int
    src_seg: np.ndarray | None  # (n >> log_seg,): input segment of each output segment
    inv_col: np.ndarray | None  # (2**log_seg,): inverse of the low column permutation
    row_lo: np.ndarray | None  # (2**log_seg,): the low row permutation (a gather)
    inv_row_hi: np.ndarray | None  # (n >> log_seg,): where each segment of the result goes
    radix: tuple[tuple[int, int], ...]  # (log_h, log_radix) of each launch after the tile


def composed_perm(sizes, perms) -> np.ndarray | None:
    """The flat index map of per-factor permutations in C order (None if all are identity)."""
    if all(p is None for p in perms):
        return None
    idx = np.zeros(1, dtype=np.int64)
    for size, p in zip(sizes, perms):
        p = np.arange(size) if p is None else np.asarray(p, dtype=np.int64)
        idx = (idx[:, None] * size + p[None, :]).ravel()
    return idx


def _int32(a):
    return None if a is None else np.ascontiguousarray(a, dtype=np.int32)


def _inverse(a):
    return None if a is None else np.argsort(a)


def radix_groups(low: int, high: int) -> tuple[tuple[int, int], ...]:
    """Bits ``low .. high-1`` in launches of three stages (radix 8), the last one shorter."""
    out = []
    b = low
    while b < high:
        r = min(3, high - b)
        out.append((b, r))
        b += r
    return tuple(out)


def schedule_for(sizes, row_perm, col_perm, log_tile: int) -> FusedSchedule | None:
    """The fused schedule of a plan, or None when the plan needs the unfused path (a factor
    that is not a power of two, or a permuted factor straddling every usable cut)."""
    sizes = tuple(int(s) for s in sizes)
    if any(s < 1 or s & (s - 1) for s in sizes):
        return None
    logs = [s.bit_length() - 1 for s in sizes]
    log_n = sum(logs)
    ranges = []  # (low bit, high bit) of each factor
    top = log_n
    for lg in logs:
        ranges.append((top - lg, top))
        top -= lg
    permuted = [r for r, rp, cp in zip(ranges, row_perm, col_perm)
                if rp is not None or cp is not None]
    if log_n <= log_tile:
        cut = log_n
        if permuted and cut < MIN_LOG_SEG:  # the fused gathers need whole 16-byte vectors
            return None
    else:
        cut = next((c for c in range(log_tile, MIN_LOG_SEG - 1, -1)
                    if not any(lo < c < hi for lo, hi in permuted)), None)
        if cut is None:
            return None
    low = [i for i, (lo, hi) in enumerate(ranges) if hi <= cut]
    high = [i for i, (lo, hi) in enumerate(ranges) if lo >= cut and i not in low]
    # a factor straddling the cut is unpermuted: split it into identity parts on either side
    hi_sizes = [sizes[i] for i in high]
    lo_sizes = [sizes[i] for i in low]
    straddle = [i for i in range(len(sizes)) if i not in low and i not in high]
    if straddle:
        (i,) = straddle
        lo_b, hi_b = ranges[i]
        hi_sizes.append(1 << (hi_b - cut))
        lo_sizes.insert(0, 1 << (cut - lo_b))
    hi_rows = [row_perm[i] for i in high] + [None] * len(straddle)
    hi_cols = [col_perm[i] for i in high] + [None] * len(straddle)
    lo_rows = [None] * len(straddle) + [row_perm[i] for i in low]
    lo_cols = [None] * len(straddle) + [col_perm[i] for i in low]
    return FusedSchedule(
        log_n=log_n,
        log_seg=cut,
        src_seg=_int32(composed_perm(hi_sizes, hi_cols)) if hi_sizes else None,
        inv_col=_int32(_inverse(composed_perm(lo_sizes, lo_cols))),
        row_lo=_int32(composed_perm(lo_sizes, lo_rows)),
        inv_row_hi=_int32(_inverse(composed_perm(hi_sizes, hi_rows))) if hi_sizes else None,
        radix=radix_groups(cut, log_n),
    )
