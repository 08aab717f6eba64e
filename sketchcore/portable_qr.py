"""A Householder QR whose float64 result is the same on every machine.

Why: the Haar factors of ``qk`` and ``preconditioner="q"`` are part of a map's numbers (and of its
``params_sha256``). LAPACK's QR (``np.linalg.qr``) is not reproducible across machines: OpenBLAS
and MKL pick kernels per CPU (SSE, AVX2, AVX-512, NEON, ...), block sizes and thread counts, and
those kernels order their sums differently and fuse multiply-adds, so the same Gaussian matrix
gives a Q that differs in the last bits from one machine to the next. A seeded map must be the
same everywhere.

How: every floating-point operation here is one that IEEE 754 defines exactly, so any conforming
machine rounds it the same way: ``+``, ``-``, ``*``, ``/`` and ``sqrt``, correctly rounded, on
float64, either on Python floats or elementwise by numpy ufuncs. An elementwise ufunc computes each
element on its own (SIMD lanes do the same IEEE operation as scalar code, and numpy never fuses two
ufunc calls into a multiply-add: each call's result is rounded to float64 in memory). There is no
BLAS, no ``np.linalg``, no ``np.sum``/``np.dot``/``@``/``einsum``, whose summation order depends on
the build, the CPU's vector width, the thread count and the memory layout. The one reduction, the
sum over a column's entries, is written out as a fixed binary tree of elementwise additions
(``_tree_sum``) whose pairing depends on nothing but the column's length. What is assumed is the
default floating-point environment (round to nearest, subnormals not flushed to zero; Gaussian
inputs keep every intermediate far from the subnormal range anyway).

The algorithm is LAPACK's unblocked Householder QR (``dgeqr2``'s reflectors, ``dlarfg``'s sign
convention, Q accumulated backwards as in ``dorg2r``), with a Python loop over the ``n`` reflectors
and numpy over the columns they update. The columns are processed in panels (left-looking), so a
panel stays in cache while the reflectors pass over it; which columns share a panel, and whether a
panel is stored row by row or column by column, changes only the speed, never a bit of the result,
since every column undergoes the same operations in the same order (tests check this). The result
equals LAPACK's to rounding: Q with R's diagonal made positive is unique for a full-rank input, so
both approximate the same matrix. It costs about ``4 m n^2`` elementwise operations and is bound by
memory traffic: measured 10-16 times LAPACK's time on near-square factors (about 3 s for
1024 x 1024) and 3-5 times on tall ones (16384 x 256: 4.4 s), paid once per map. Panels of 64
columns were the fastest of those tried; a right-looking update of the whole trailing matrix (no
panels) took twice as long, and ``np.add.accumulate`` sums were several times slower than the tree.
"""

from __future__ import annotations

import numpy as np

__all__ = ["householder_qr_positive"]


def _tree_sum(a: np.ndarray, spare: np.ndarray) -> np.ndarray:
    """Sum of ``a`` over its last axis in a fixed order, using only elementwise additions.

    ``a`` has at least one entry along its last axis; ``spare`` is scratch of ``a``'s shape.
    Both are overwritten. While ``n > 1`` entries are left, with ``h = ceil(n / 2)``, entry ``i``
    becomes ``a[..., i] + a[..., h + i]`` for ``i < n - h`` (the middle entry of an odd ``n``
    is carried over) and ``n`` becomes ``h``. The pairing depends only on ``n``, never on the
    machine, the memory layout or numpy's internals, and it is a pairwise sum (error growing
    with log2 of the count, like LAPACK's). ``np.add.accumulate`` would fix the order too, but a
    sequential running sum is several times slower than these ``log2(n)`` block additions. The
    halves are added in place where they lie in disjoint memory, else into ``spare`` (numpy
    would copy an input whose memory range overlaps the output's); the sums are the same.
    """
    n = a.shape[-1]
    # in place when the halves lie in disjoint memory (the last axis is the outer one in memory)
    inplace = a.ndim == 2 and a.strides[-1] >= a.strides[0] * a.shape[0] > 0
    src, dst = a, (a if inplace else spare)
    while n > 1:
        h = (n + 1) // 2
        np.add(src[..., : n - h], src[..., h:n], out=dst[..., : n - h])
        if h > n - h and dst is not src:
            dst[..., n - h] = src[..., n - h]
        src, dst = dst, src
        n = h
    return src[..., 0]


def householder_qr_positive(a: np.ndarray, *, layout: str | None = None,
                            panel: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(q, r_diag)``: the reduced QR of ``a`` (``m x n``, ``m >= n``) with R's diagonal made
    non-negative, ``q`` ``m x n`` with orthonormal columns and ``r_diag`` R's diagonal (>= 0).

    Bit-for-bit the same on every machine for the same input (see the module's docstring).
    ``layout`` ("rows": a panel stored row by row, "cols": column by column) and ``panel`` (how
    many columns are updated together) only decide the memory traffic, never the result: every
    column undergoes the same operations in the same order whatever they are. By default they
    are chosen for speed from the shape. A column whose R diagonal is exactly zero (a
    rank-deficient input) keeps its reflector's sign.
    """
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] < a.shape[1]:
        raise ValueError(f"householder_qr_positive needs an m x n matrix with m >= n, got shape "
                         f"{a.shape}.")
    m, n = a.shape
    if layout is None:  # measured: column panels only pay off for long columns
        layout = "rows" if m <= 4096 else "cols"
    if layout not in ("rows", "cols"):
        raise ValueError(f"layout must be 'rows' or 'cols', got {layout!r}.")
    if panel is None:  # measured; a panel and its scratch should stay in a core's cache
        panel = 64 if layout == "rows" else max(8, min(64, (1 << 17) // m))
    panel = max(1, min(int(panel), max(n, 1)))
    # every array below is a "columns view" (one column of the matrix per row of the view), stored
    # row by row ("rows": the view of an m x panel C array's transpose) or column by column
    order = "F" if layout == "rows" else "C"
    work = (np.empty((panel, m), dtype=np.float64, order=order),
            np.empty((panel, m), dtype=np.float64, order=order))
    vs: list[np.ndarray] = []  # reflector k: H_k = I - tau_k v_k v_k^T on rows k..m-1, v_k[0] = 1
    taus: list[float] = []
    beta = np.empty(n, dtype=np.float64)
    r = np.empty((n, m), dtype=np.float64, order=order)  # the columns of a, then of R and Q
    r[...] = a.T
    # R, left-looking by panels (LAPACK's dgeqr2 reordered): a panel of columns receives every
    # earlier reflector in order, then yields its own reflectors one column at a time
    for j0 in range(0, n, panel):
        j1 = min(n, j0 + panel)
        p = np.array(r[j0:j1], order=order)
        for k in range(j0):
            _reflect(p[:, k:], vs[k], taus[k], work)
        for k in range(j0, j1):
            v, tau, b = _reflector(p[k - j0, k:])
            vs.append(v)
            taus.append(tau)
            beta[k] = b
            if k + 1 < j1:
                _reflect(p[k - j0 + 1:, k:], v, tau, work)
    # Q = H_0 H_1 ... H_{n-1} times the first n columns of I (LAPACK's dorg2r): column j is
    # H_0 ... H_j e_j, built from H_j back to H_0; by panels of columns again
    for j0 in range(0, n, panel):
        j1 = min(n, j0 + panel)
        p = np.zeros((j1 - j0, m), dtype=np.float64, order=order)
        p[np.arange(j1 - j0), np.arange(j0, j1)] = 1.0
        for k in range(j1 - 1, -1, -1):
            if taus[k] != 0.0:
                c = max(k, j0) - j0  # H_k leaves the columns j < k alone (rows >= k are zero)
                _reflect(p[c:, k:], vs[k], taus[k], work)
        r[j0:j1] = p
    # make R's diagonal non-negative: flip the sign of Q's column k where beta[k] < 0
    np.multiply(r, np.where(beta < 0.0, -1.0, 1.0)[:, None], out=r)
    return r.T, np.abs(beta)


def _reflector(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(v, tau, beta)`` with ``(I - tau v v^T) x = (beta, 0, ..., 0)`` and ``v[0] = 1``:
    LAPACK's ``dlarfg`` (``beta = -sign(x[0]) ||x||``), without its rescaling of tiny columns,
    which Gaussian entries never need."""
    alpha = float(x[0])
    v = np.zeros(x.shape[0], dtype=np.float64)
    v[0] = 1.0
    if x.shape[0] == 1:
        return v, 0.0, alpha
    sq = np.multiply(x[1:], x[1:])
    xnorm2 = float(_tree_sum(sq, np.empty_like(sq)))
    if xnorm2 == 0.0:  # already (alpha, 0, ..., 0): H = I
        return v, 0.0, alpha
    norm = float(np.sqrt(np.float64(alpha * alpha + xnorm2)))
    b = -norm if alpha >= 0.0 else norm
    np.divide(x[1:], alpha - b, out=v[1:])
    return v, (b - alpha) / b, b


def _reflect(c: np.ndarray, v: np.ndarray, tau: float, work: tuple) -> None:
    """Apply ``H = I - tau v v^T`` to columns in place: ``c`` holds one column per row (each
    ``len(v)`` long). ``w = v^T column`` (a fixed-order sum along each row of ``c``), then
    ``column -= w (tau v)``, elementwise. ``work`` is two scratch arrays of at least ``c``'s shape."""
    rows, length = c.shape
    if rows == 0:
        return
    prod = work[0][:rows, :length]
    np.multiply(c, v[None, :], out=prod)
    w = _tree_sum(prod, work[1][:rows, :length]).copy()
    np.multiply(w[:, None], np.multiply(v, tau)[None, :], out=prod)
    np.subtract(c, prod, out=c)
