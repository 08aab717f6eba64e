"""Kronecker plans of the structured sketches: power-of-two factorizations and ``KronPlan``.

A ``KronPlan`` is part of the kernel contract: a backend kernel receives one and may use its host
arrays (``row_perm``/``col_perm``) to build a fused native kernel, or call ``takes`` /
``dense_factors`` for arrays already in its namespace.
"""

from __future__ import annotations

import numpy as np

from .array_namespace import device_of, from_host
from .param_cache import ParamCache

__all__ = ["next_pow2", "pow2_factors", "balanced_factors", "KronPlan"]


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 1 << (int(n) - 1).bit_length()


def pow2_factors(n: int, max_block: int) -> tuple[int, ...]:
    """Split a power of two ``n`` into the fewest power-of-two factors <= ``max_block``, as equal as
    possible, larger ones first (e.g. 2**22 with max_block 1024 -> (256, 128, 128))."""
    log_n = n.bit_length() - 1
    log_b = max(1, max_block.bit_length() - 1)
    k = max(1, -(-log_n // log_b))
    base, extra = divmod(log_n, k)
    return tuple(1 << (base + (1 if i < extra else 0)) for i in range(k))


def balanced_factors(log_total: int, k: int) -> tuple[int, ...]:
    """``k`` powers of two with exponents as equal as possible summing to ``log_total``."""
    base, extra = divmod(log_total, k)
    return tuple(1 << (base + (1 if i < extra else 0)) for i in range(k))


def _inverse(p):
    if p is None:
        return None
    inv = np.empty_like(p)
    inv[p] = np.arange(p.shape[0], dtype=p.dtype)
    return inv


class KronPlan:
    """A Kronecker-structured orthogonal transform with permutations inside each factor:
    ``M = (P_1 T_1 P'_1) x ... x (P_K T_K P'_K)`` on vectors of length ``prod(sizes)``.

    Permutations act as gathers: ``P v = take(v, row_perm[i])`` on factor axis i after the
    transform, ``P' v = take(v, col_perm[i])`` before it. ``transpose()`` returns the plan of
    ``M^T`` (inverse permutations, swapped sides).
    """

    def __init__(self, sizes, row_perm=None, col_perm=None):
        self.sizes = tuple(int(s) for s in sizes)
        k = len(self.sizes)
        self.row_perm = tuple(row_perm) if row_perm is not None else (None,) * k
        self.col_perm = tuple(col_perm) if col_perm is not None else (None,) * k
        self.n = int(np.prod(self.sizes))
        self._cache = ParamCache()
        self._t: KronPlan | None = None

    def transpose(self) -> KronPlan:
        if self._t is None:
            t = KronPlan(
                self.sizes,
                row_perm=[_inverse(p) for p in self.col_perm],
                col_perm=[_inverse(p) for p in self.row_perm],
            )
            t._t = self
            self._t = t
        return self._t

    def takes(self, xp, like):
        """(row gathers, column gathers) as index arrays of ``xp`` (None where identity)."""

        def build():
            def conv(p):
                return None if p is None else from_host(xp, p, device=device_of(like))

            return [conv(p) for p in self.row_perm], [conv(p) for p in self.col_perm]

        return self._cache.cached(xp, like, "takes", build)

    def dense_factors(self, xp, like):
        """The factors ``P_i H_i P'_i / sqrt(B_i)`` as dense matrices (lookup-free path)."""
        from .kernels.hadamard import permuted_factor

        def build():
            out = []
            for size, rp, cp in zip(self.sizes, self.row_perm, self.col_perm):
                ct = _inverse(cp)
                out.append(
                    permuted_factor(
                        xp,
                        size,
                        None if rp is None else from_host(xp, rp, device=device_of(like)),
                        None if ct is None else from_host(xp, ct, device=device_of(like)),
                        dtype=like.dtype,
                        device=device_of(like),
                    )
                )
            return out

        return self._cache.cached(xp, like, "dense", build)
