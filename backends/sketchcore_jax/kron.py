"""Lookup-free Kronecker kernels for XLA: every transform is one ``einsum`` of small matrices.

The paper's recipe for TPUs: ``H_n = H_{B_1} x ... x H_{B_K}`` with the in-factor permutations
folded into each dense ``B_i x B_i`` factor, contracted by matmuls, so no gather runs at all. The
last axis is viewed as a ``(B_1, ..., B_K)`` tensor and all factors are contracted in a single
``jnp.einsum``, which lets XLA pick the contraction order; that is why it beats both the
reference reshape-matmul chain and a jitted radix-2 butterfly (the jax backend's timings:
docs/results.md, sections "1b. FWHT vs the memory floor, every CPU backend" and "1c. Every backend
vs D and vs N").

Factors without permutations are split into pieces of at most ``RADIX`` (an unpermuted
``H_B`` is itself a Kronecker product), which keeps FJL/FFD's single ``(n,)`` plan at
``2 * RADIX`` flops per element per piece instead of a dense ``n x n`` matrix. A permuted factor
larger than ``DENSE_LIMIT`` (only with a large ``max_block``) is applied as a gather on its own
axis around the unpermuted split.

Constants are host numpy arrays (cached per plan and dtype), so they are never jax tracers and
can be captured by any trace. Imported only when a jax kernel runs.
"""

from __future__ import annotations

import functools
import string
import weakref

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["kron_einsum", "plan_hadamard", "fwht_einsum", "split_pow2", "RADIX", "DENSE_LIMIT"]

#: Largest piece an unpermuted Hadamard factor is split into.
RADIX = 64
#: Largest permuted factor kept as one dense matrix (2048^2 float32 = 16 MiB).
DENSE_LIMIT = 2048

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LETTERS = string.ascii_letters


def split_pow2(n: int, radix: int = RADIX) -> list[int]:
    """Powers of two, at most ``radix``, as equal as possible, with product ``n``."""
    log_n = n.bit_length() - 1
    log_r = radix.bit_length() - 1
    k = max(1, -(-log_n // log_r))
    base, extra = divmod(log_n, k)
    return [1 << (base + (1 if i < extra else 0)) for i in range(k)]


@functools.lru_cache(maxsize=64)
def _hadamard(size: int, scale: float) -> np.ndarray:
    """The Sylvester Hadamard matrix times ``scale`` (float64, read-only: it is cached)."""
    h = np.ones((1, 1))
    while h.shape[0] < size:
        h = np.block([[h, h], [h, -h]])
    h = h * scale
    h.flags.writeable = False
    return h


def _precision(dtype):
    return jax.lax.Precision.HIGHEST if dtype in (jnp.float32, jnp.float64) else None


def kron_einsum(x, factors):
    """``(F_1 x ... x F_K) x`` on the last axis in one einsum (factors ``(D_i, B_i)``).

    float32/float64 contract at full precision (TPUs would otherwise use bfloat16 passes);
    lower-precision inputs accumulate in float32 and are cast back.
    """
    batch = x.shape[:-1]
    ins = [int(f.shape[1]) for f in factors]
    n = int(np.prod(ins)) if ins else 1
    if x.shape[-1] != n:
        raise ValueError(f"kron_matmul: last axis {x.shape[-1]} != product of factor columns {n}.")
    k = len(factors)
    if 2 * k + 1 > len(_LETTERS):
        raise ValueError(f"kron_matmul supports at most {(len(_LETTERS) - 1) // 2} factors, got {k}.")
    rows, src, dst = _LETTERS[-1], _LETTERS[:k], _LETTERS[k : 2 * k]
    spec = f"{rows}{src},{','.join(d + s for d, s in zip(dst, src))}->{rows}{dst}"
    y = jnp.reshape(x, (-1, *ins))
    wide = x.dtype in (jnp.float32, jnp.float64)
    out = jnp.einsum(
        spec, y, *factors, precision=_precision(x.dtype),
        preferred_element_type=None if wide else jnp.float32,
    )
    outs = [int(f.shape[0]) for f in factors]
    out = jnp.reshape(out, (*batch, int(np.prod(outs)) if outs else 1))
    return out if wide else out.astype(x.dtype)


class _PlanPieces:
    """A plan as (tensor view, per-axis pre/post gathers, dense matrices) on the host."""

    def __init__(self, plan):
        self.sizes = plan.sizes
        self.pre = []  # (axis, index) gathers before the contraction
        self.post = []  # (axis, index) gathers after it
        self.pieces = []  # (size, row_perm, col_perm, scale) per einsum axis, C order
        for axis, (b, rp, cp) in enumerate(zip(plan.sizes, plan.row_perm, plan.col_perm)):
            permuted = rp is not None or cp is not None
            if permuted and b <= DENSE_LIMIT:
                self.pieces.append((b, rp, cp))
                continue
            if cp is not None:
                self.pre.append((axis, np.asarray(cp, dtype=np.int32)))
            if rp is not None:
                self.post.append((axis, np.asarray(rp, dtype=np.int32)))
            self.pieces.extend((r, None, None) for r in split_pow2(b))
        self._mats: dict = {}

    def matrices(self, dtype) -> list[np.ndarray]:
        key = np.dtype(dtype).name
        mats = self._mats.get(key)
        if mats is None:
            mats = []
            for b, rp, cp in self.pieces:
                h = _hadamard(b, 1.0 / np.sqrt(b))
                if rp is not None:
                    h = h[rp, :]
                if cp is not None:
                    h = h[:, np.argsort(cp)]
                mats.append(h.astype(dtype))
            self._mats[key] = mats
        return mats


def _pieces(plan) -> _PlanPieces:
    p = _PLANS.get(plan)
    if p is None:
        p = _PlanPieces(plan)
        _PLANS[plan] = p
    return p


def plan_hadamard(x, plan, diag=None):
    """``M (diag * x)`` for a ``KronPlan`` of normalized Hadamard factors, lookup-free."""
    if diag is not None:
        x = x * diag
    p = _pieces(plan)
    batch = x.shape[:-1]
    nb = len(batch)
    if p.pre or p.post:
        y = jnp.reshape(x, (*batch, *p.sizes))
        for axis, idx in p.pre:
            y = jnp.take(y, idx, axis=nb + axis)
        x = jnp.reshape(y, x.shape)
    mat_dtype = x.dtype if x.dtype in (jnp.float32, jnp.float64) else jnp.float32
    y = kron_einsum(x, p.matrices(mat_dtype))
    if p.post:
        y = jnp.reshape(y, (*batch, *p.sizes))
        for axis, idx in p.post:
            y = jnp.take(y, idx, axis=nb + axis)
        y = jnp.reshape(y, x.shape)
    return y


def fwht_einsum(x):
    """Unnormalized FWHT of the last axis (a power of two) as one einsum of small factors."""
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(
            f"the Walsh-Hadamard transform needs a power-of-two length on the last axis, got {n}; "
            "the sketches pad automatically (sketchcore.kernels.pad_last pads by hand)."
        )
    dtype = x.dtype if x.dtype in (jnp.float32, jnp.float64) else jnp.float32
    mats = [_hadamard(r, 1.0).astype(dtype) for r in split_pow2(n)]
    return kron_einsum(x, mats)
