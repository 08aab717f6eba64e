"""The Walsh-Hadamard transform, two portable ways.

* ``fwht_butterfly``: log2(n) radix-2 butterfly stages (reshape, add/subtract, stack). O(n log n);
  the path CPUs and GPUs like.
* ``kron_hadamard_dense``: the lookup-free path of the paper for TPUs: ``H_n = H_B1 x ... x H_BK``,
  each small factor a dense matrix (with the in-factor permutations folded in) contracted by a
  matmul. O(n * sum B_i); no gathers at all.

Ordering is Sylvester (natural) order, i.e. ``scipy.linalg.hadamard``.
"""

from __future__ import annotations

from .kron import kron_matmul

__all__ = ["fwht", "fwht_butterfly", "hadamard_matrix", "kron_hadamard_dense"]


def _check_pow2(n: int) -> None:
    if n < 1 or n & (n - 1):
        raise ValueError(
            f"the Walsh-Hadamard transform needs a power-of-two length on the last axis, got {n}; "
            "the sketches pad automatically (sketchcore.kernels.pad_last pads by hand)."
        )


def fwht_butterfly(xp, x):
    """Unnormalized Walsh-Hadamard transform of the last axis (length a power of two)."""
    n = x.shape[-1]
    _check_pow2(n)
    batch = x.shape[:-1]
    h = 1
    while h < n:
        y = xp.reshape(x, (*batch, n // (2 * h), 2, h))
        a = y[..., 0, :]
        b = y[..., 1, :]
        x = xp.reshape(xp.stack((a + b, a - b), axis=-2), (*batch, n))
        h *= 2
    return x


fwht = fwht_butterfly


def hadamard_matrix(xp, n: int, *, dtype, device=None):
    """The unnormalized ``n x n`` Sylvester Hadamard matrix, built by doubling."""
    _check_pow2(n)
    h = xp.ones((1, 1), dtype=dtype, device=device)
    while h.shape[0] < n:
        h = xp.concat((xp.concat((h, h), axis=1), xp.concat((h, -h), axis=1)), axis=0)
    return h


def kron_hadamard_dense(xp, x, factors):
    """Apply ``F_1 x ... x F_K`` given the small dense factor matrices (lookup-free path)."""
    return kron_matmul(xp, x, factors)


def permuted_factor(xp, size: int, row_take, col_take, *, dtype, device=None):
    """A dense normalized factor ``H_B / sqrt(B)`` with its rows reordered by ``take(., row_take,
    axis=0)`` and columns by ``take(., col_take, axis=1)`` (None: unchanged)."""
    h = hadamard_matrix(xp, size, dtype=dtype, device=device) * (1.0 / float(size) ** 0.5)
    if row_take is not None:
        h = xp.take(h, row_take, axis=0)
    if col_take is not None:
        h = xp.take(h, col_take, axis=1)
    return h


__all__ += ["permuted_factor"]
