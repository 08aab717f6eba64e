"""Kronecker-structured operations on the last axis: contraction with small factors, permutation
inside factors."""

from __future__ import annotations

__all__ = ["kron_matmul", "take_factors"]


def kron_matmul(xp, x, factors):
    """``(F_1 x ... x F_K) x`` on the last axis, each ``F_i`` of shape ``(D_i, B_i)``.

    The last axis (length ``prod B_i``, C order) is viewed as a ``(B_1, ..., B_K)`` tensor and
    axis i is contracted with ``F_i``; the result has length ``prod D_i``. Each step is one
    broadcast matmul ``F_i @ X`` with ``X`` of shape ``(..., D_1..D_{i-1}, B_i, B_{i+1}...B_K)``,
    so there are no transposes and no gathers. The last factor (nothing to its right) is applied
    as ``X @ F_K^T`` with ``X`` of shape ``(..., D_1..D_{K-1}, B_K)``: one large GEMM instead of
    a stack of matrix-vector products, which keeps the BLAS kernel busy on numpy and torch alike
    (timings: docs/results.md, section "1a. Speed on the reference backend vs D").
    """
    batch = x.shape[:-1]
    ins = [int(f.shape[1]) for f in factors]
    outs = [int(f.shape[0]) for f in factors]
    n = 1
    for b in ins:
        n *= b
    if x.shape[-1] != n:
        raise ValueError(f"kron_matmul: last axis {x.shape[-1]} != product of factor columns {n}.")
    done = 1  # product of D_j already contracted
    for i, f in enumerate(factors):
        rest = 1
        for b in ins[i + 1 :]:
            rest *= b
        if rest == 1:
            y = xp.matmul(xp.reshape(x, (*batch, done, ins[i])), xp.matrix_transpose(f))
        else:
            y = xp.matmul(f, xp.reshape(x, (*batch, done, ins[i], rest)))
        done *= outs[i]
        x = xp.reshape(y, (*batch, done * rest))
    return x


def take_factors(xp, x, sizes, perms):
    """Permute the last axis inside each Kronecker factor: axis i of the ``sizes`` tensor is
    reindexed by ``perms[i]`` (``None`` leaves it alone). ``y[.., j_1..j_K] = x[.., p_1[j_1]..]``."""
    if all(p is None for p in perms):
        return x
    batch = x.shape[:-1]
    n = x.shape[-1]
    y = xp.reshape(x, (*batch, *sizes))
    for i, p in enumerate(perms):
        if p is not None:
            y = xp.take(y, p, axis=len(batch) + i)
    return xp.reshape(y, (*batch, n))
