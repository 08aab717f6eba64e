"""Whole-operator forward paths of affd and afjl (Hadamard preconditioner) on numpy arrays: the
host-side plans of ``_fused`` and the calls into it. ``NumbaBackend.apply_op`` sends an
operator here; anything not handled (other algorithms, preconditioners, directions, dtypes)
returns None and takes the generic path.

affd. With ``F = H(B z)`` (unnormalized, ``z`` the zero-padded row), ``pi1``/``pi2`` the gathers of
``H^{pi1}`` (rows) and ``H^{pi2}`` (columns), the reference computes
``t1 = F[pi1(.)] / sqrt(N)``, ``u[j] = G[pi2(j)] t1[pi2(j)]``, ``y = s (H u)[:D] / sqrt(N)``.
For ``q < D2 = next_pow2(D)``, ``(H u)[q] = (H_D2 a)[q]`` with ``a[t] = sum_{j = t mod D2} u[j]``
(Sylvester order: ``H_N = H_{N/D2} x H_D2``). Substituting ``p = pi1(pi2(j))`` (``sigma = pi1 o
pi2``, a Kronecker permutation): ``a[sigma^-1(p) mod D2] += G[pi1^-1(p)] F[p]``. Cut ``p`` at a
Kronecker factor boundary into ``(K, rho)`` with ``L = 2^l`` trailing elements: ``sigma^-1(p) =
sigma_hi^-1(K) L + sigma_lo^-1(rho)``, so block ``F_K`` times ``w_K`` (``w[p] = G[pi1^-1(p)]``,
precomputed) is added whole into accumulator block ``T[K] = sigma_hi^-1(K) mod M``
(``M = max(1, D2/L)``); the last factors' permutation is undone once, on the accumulator.

afjl. ``y[q] = G_s[q] F[pi1(q)] / sqrt(N)`` for ``q < D``: only ``D`` entries of ``F`` are needed.
Cut the positions ``P_q = pi1(q)`` at ``L = 2^l`` (any ``l``): they fall into ``m`` distinct blocks
``K`` of ``F``, and ``F_K = H_L(sum_K' (-1)^<K,K'> v_K')`` with ``v = B z`` as ``(N/L, L)``. The
rows ``K'`` are combined ``2^a`` at a time (``K' = K'_a 2^c + K'_b``: a radix-``2^a`` butterfly
over ``K'_a``, then signed adds over ``K'_b`` into each target). ``l`` and ``a`` minimize a cost
model fitted to measurements (``N (1 + 0.15 a + 2 m / 2^a) + 0.25 m L l``: an accumulator update
costs far more than a butterfly stage in registers).
"""

from __future__ import annotations

import threading
import weakref

import numba
import numpy as np

from ._simd import VECTOR_BYTES, sign_lut

__all__ = ["apply", "release_scratch"]

#: below this many input elements one thread does the whole call
PARALLEL_MIN = 1 << 18
#: fewer rows than threads: rows at least this long are split among all threads
PARALLEL_ROW_MIN = 1 << 17
#: scratch kept per calling thread between calls (bytes); larger needs are allocated per call
SCRATCH_KEEP_BYTES = 256 << 20

#: bytes of a page: scratch rows start on one; buffers written while others are read sit half a
#: page apart, so no load shares its low 12 address bits with a pending store ("4K aliasing",
#: which stalls the load until the store retires)
PAGE = 4096
HALF = PAGE // 2

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LUTS = {np.dtype(np.float32): sign_lut(np.float32), np.dtype(np.float64): sign_lut(np.float64)}
_local = threading.local()


def release_scratch() -> None:
    """Drop the scratch buffers this thread keeps between calls."""
    _local.__dict__.clear()


def _scratch(dtype, shape) -> np.ndarray:
    """A ``shape`` float buffer of ``dtype`` (page-aligned), reused across calls on this thread
    (no allocation and no first-touch page faults on the hot path) up to
    ``SCRATCH_KEEP_BYTES``."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) if shape else 1
    key = dtype.char
    buf = getattr(_local, key, None)
    if buf is None or buf.size < size:
        from ._memory import aligned_empty

        buf = aligned_empty((max(size, 1),), dtype, PAGE)
        if buf.nbytes <= SCRATCH_KEEP_BYTES:
            setattr(_local, key, buf)
    return buf[:size].reshape(shape)


def _pages(count: int, itemsize: int) -> int:
    """``count`` elements rounded up to whole pages (so every scratch row starts on a page)."""
    per = PAGE // itemsize
    return -(-count // per) * per


# ---- plans --------------------------------------------------------------------------------------
def _digits_map(sizes, perms, positions):
    """Kronecker gather ``pi(positions)``: digit ``i`` (factor ``i``, C order) goes through
    ``perms[i]`` (None: identity)."""
    out = np.zeros_like(positions)
    rest = positions.copy()
    stride = 1
    for size, p in zip(reversed(sizes), reversed(perms)):
        digit = rest % size
        rest //= size
        out += (digit if p is None else np.asarray(p, dtype=np.int64)[digit]) * stride
        stride *= size
    return out


def _kron_take(values, sizes, perms):
    """``values[pi(j)]`` for every ``j`` (``take_factors`` on the host)."""
    y = values.reshape(sizes)
    for i, p in enumerate(perms):
        if p is not None:
            y = np.take(y, p, axis=i)
    return y.reshape(-1)


def _perm(p, size: int) -> np.ndarray:
    return np.arange(size, dtype=np.int64) if p is None else np.asarray(p, dtype=np.int64)


def _inverse(p):
    inv = np.empty_like(p)
    inv[p] = np.arange(p.shape[0], dtype=p.dtype)
    return inv


def _handled(op) -> str | None:
    """'affd' or 'afjl' when ``op`` is one of those with the Hadamard preconditioner."""
    name = getattr(op, "name", None)
    if name not in ("affd", "afjl") or type(op).__name__ not in ("AFFD", "AFJL"):
        return None
    if op.options.get("preconditioner") != "hadamard" or not getattr(op, "signs", False):
        return None
    pre1 = getattr(op, "pre1", None)
    if getattr(pre1, "kernel", None) != "hadamard":
        return None
    if name == "affd" and getattr(getattr(op, "pre2", None), "kernel", None) != "hadamard":
        return None
    return name


class _Common:
    def __init__(self, op, dtype):
        self.n = int(op.n_pad)
        self.d = int(op.out_dim)
        self.in_dim = int(op.in_dim)
        self.dtype = dtype
        signs = np.asarray(op.params.host["B"])
        bits = np.packbits(signs < 0, bitorder="little")
        self.bits = bits if bits.size else np.zeros(1, dtype=np.uint8)
        self.lut = _LUTS[dtype]
        self.sizes = tuple(op.pre1.plan.sizes)


class _AffdPlan(_Common):
    def __init__(self, op, dtype):
        super().__init__(op, dtype)
        n, sizes = self.n, self.sizes
        perms1 = [_perm(p, b) for p, b in zip(op.pre1.plan.row_perm, sizes)]
        perms2 = [_perm(p, b) for p, b in zip(op.pre2.plan.col_perm, sizes)]
        sigma = [p1[p2] for p1, p2 in zip(perms1, perms2)]
        sigma_inv = [_inverse(s) for s in sigma]
        d2 = 1 << (self.d - 1).bit_length()
        # trailing factors: the largest boundary with L <= D2, else the last factor alone
        l_bits, k = 0, len(sizes)
        while k > 0 and (1 << l_bits) * sizes[k - 1] <= d2:
            l_bits += sizes[k - 1].bit_length() - 1
            k -= 1
        if l_bits == 0:
            k = len(sizes) - 1
            l_bits = sizes[-1].bit_length() - 1
        blk = 1 << l_bits
        hi_sizes, lo_sizes = sizes[:k], sizes[k:]
        nblk = max(1, d2 // blk)
        nk = n // blk
        self.blk, self.nblk, self.d2 = blk, nblk, d2
        self.ttab = (_digits_map(hi_sizes, sigma_inv[:k], np.arange(nk, dtype=np.int64))
                     % nblk).astype(np.int64)
        self.sig_lo = _digits_map(lo_sizes, sigma[k:], np.arange(blk, dtype=np.int64))
        g = np.asarray(op.params.host["G"], dtype=np.float64)
        inv1 = [_inverse(p) for p in perms1]
        self.w = np.ascontiguousarray(_kron_take(g, sizes, inv1).astype(dtype))
        self.scale = float(op.s) / n

    def layout(self, itemsize: int) -> tuple[int, int, int]:
        """(acc offset, a offset, row width) of a scratch row; ``F`` is at 0."""
        acc_off = _pages(self.n, itemsize) + HALF // itemsize
        a_off = acc_off + self.nblk * self.blk
        return acc_off, a_off, _pages(a_off + self.d2, itemsize)


class _AfjlPlan(_Common):
    def __init__(self, op, dtype):
        super().__init__(op, dtype)
        n, d = self.n, self.d
        perms1 = [None if p is None else np.asarray(p, dtype=np.int64)
                  for p in op.pre1.plan.row_perm]
        pos = _digits_map(self.sizes, perms1, np.arange(d, dtype=np.int64))
        lanes = max(1, VECTOR_BYTES // np.dtype(dtype).itemsize)
        log_n = n.bit_length() - 1
        best = None
        for l_bits in range(min(lanes.bit_length() - 1, log_n), log_n + 1):
            targets = np.unique(pos >> l_bits)
            m = targets.size
            blk = 1 << l_bits
            rows_log = log_n - l_bits
            for a in range(0, min(3, rows_log) + 1):
                cost = n * (1.0 + 0.15 * a + 2.0 * m / (1 << a)) + 0.25 * m * blk * max(l_bits, 1)
                if best is None or cost < best[0]:
                    best = (cost, l_bits, a, targets)
        _, l_bits, a, targets = best
        blk = 1 << l_bits
        c = log_n - l_bits - a
        index = {int(t): i for i, t in enumerate(targets)}
        # accumulators of the targets spread over a page's offsets (see PAGE), so their stores
        # never alias each other's loads
        itemsize = np.dtype(dtype).itemsize
        pad = max(64, (PAGE // max(1, targets.size)) // 64 * 64) // itemsize
        self.stride_t = blk + pad
        self.blk, self.radix, self.c = blk, 1 << a, c
        self.ka = (targets >> c).astype(np.int64)
        self.kbits = (targets & ((1 << c) - 1)).astype(np.int64)
        self.m = int(targets.size)
        t_of_q = np.array([index[int(t)] for t in (pos >> l_bits)], dtype=np.int64)
        self.slot = t_of_q * self.stride_t + (pos & (blk - 1))
        coef = np.asarray(op.params.host["G"], dtype=np.float64) / np.sqrt(float(n))
        self.coef = np.ascontiguousarray(coef.astype(dtype))

    def layout(self, itemsize: int, padded: bool) -> tuple[int, int, int, int]:
        """(tmp offset, sign offset, padded-row offset, row width) of a scratch row; the
        accumulators are at 0."""
        lanes = max(1, VECTOR_BYTES // itemsize)
        tmp_off = self.m * self.stride_t + HALF // itemsize
        sgn_off = tmp_off + 8 * lanes
        pad_off = _pages(sgn_off + self.m, itemsize)
        return tmp_off, sgn_off, pad_off, _pages(pad_off + (self.n if padded else 0), itemsize)


def _plan(op, kind: str, dtype):
    per_op = _PLANS.get(op)
    if per_op is None:
        per_op = _PLANS[op] = {}
    plan = per_op.get(dtype)
    if plan is None:
        plan = per_op[dtype] = (_AffdPlan if kind == "affd" else _AfjlPlan)(op, dtype)
    return plan


# ---- drivers ------------------------------------------------------------------------------------
def handles(op, x) -> bool:
    """Whether ``apply(op, x)`` runs a fused kernel (whose scratch is one row per worker)."""
    return (_handled(op) is not None and x.ndim > 0 and x.shape[-1] == op.in_dim
            and op.n_pad >= 64)


def apply(op, x):
    """``op.apply`` on numpy ``x`` through the fused kernels, or None when not handled."""
    if not handles(op, x):
        return None
    kind = _handled(op)
    dtype = x.dtype
    plan = _plan(op, kind, dtype)
    batch = x.shape[:-1]
    rows = int(np.prod(batch)) if batch else 1
    out = np.empty((rows, plan.d), dtype=dtype)
    if rows == 0:
        return out.reshape(*batch, plan.d)
    xf = np.ascontiguousarray(x).reshape(-1)
    of = out.reshape(-1)
    threads = 1 if rows * plan.n < PARALLEL_MIN else numba.get_num_threads()
    if kind == "affd":
        _affd(plan, of, xf, rows, threads)
    else:
        _afjl(plan, of, xf, rows, threads)
    return out.reshape(*batch, plan.d)


def _affd(p, of, xf, rows, threads):
    from ._fused import affd_can_split, affd_row_parallel, affd_rows

    itemsize = xf.itemsize
    acc_off, a_off, width = p.layout(itemsize)
    if rows >= threads or p.n < PARALLEL_ROW_MIN or not affd_can_split(p.n, p.blk, itemsize):
        workers = max(1, min(threads, rows))
        scratch = _scratch(p.dtype, (workers, width))
        affd_rows(of, xf, rows, p.in_dim, p.n, p.d, p.bits, p.lut, p.w, p.ttab, p.sig_lo, p.blk,
                  p.nblk, p.d2, p.dtype.type(p.scale), scratch, acc_off, a_off, workers)
        return
    # one long row on all threads: one accumulator per worker, half a page off F's pages
    acc_n = _pages(p.nblk * p.blk, itemsize)
    start = width + HALF // itemsize
    buf = _scratch(p.dtype, (start + threads * acc_n,))
    F = buf[: p.n]
    a = buf[a_off : a_off + p.d2]
    accs = buf[start:].reshape(threads, acc_n)[:, : p.nblk * p.blk]
    for r in range(rows):
        affd_row_parallel(of, r * p.d, xf, r * p.in_dim, p.in_dim, p.n, p.d, p.bits, p.lut, p.w,
                          p.ttab, p.sig_lo, p.blk, p.nblk, p.d2, p.dtype.type(p.scale), F, accs,
                          a, threads)


def _afjl(p, of, xf, rows, threads):
    from ._fused import afjl_row_parallel, afjl_rows, copy_padded

    itemsize = xf.itemsize
    padded = p.in_dim != p.n
    tmp_off, sgn_off, pad_off, width = p.layout(itemsize, padded)
    if rows >= threads or p.n < PARALLEL_ROW_MIN or (1 << p.c) < threads:
        workers = max(1, min(threads, rows))
        scratch = _scratch(p.dtype, (workers, width))
        afjl_rows(of, xf, rows, p.in_dim, p.n, p.d, p.bits, p.lut, p.blk, p.c, p.radix, p.ka,
                  p.kbits, p.slot, p.coef, scratch, p.stride_t, tmp_off, sgn_off, pad_off,
                  workers)
        return
    # one long row on all threads: accumulators and butterfly outputs per worker
    buf = _scratch(p.dtype, (threads, width))
    accs = buf[:, : p.m * p.stride_t]
    tmps = buf[:, tmp_off:pad_off]
    pad = buf[0, pad_off : pad_off + p.n]
    for r in range(rows):
        if padded:
            copy_padded(pad, xf, r * p.in_dim, p.in_dim, p.n)
            src, s0 = pad, 0
        else:
            src, s0 = xf, r * p.in_dim
        afjl_row_parallel(of, r * p.d, src, s0, p.blk, p.c, p.radix, p.ka, p.kbits, p.slot,
                          p.coef, p.d, p.bits, p.lut, accs, p.stride_t, tmps, threads)
