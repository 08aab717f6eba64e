"""Sparse matrix times vector in padded-row (ELL) form, with gathers only.

The array API has no scatter-add, so every sparse product, in either direction, is written as a
gather: row r of the matrix keeps ``S`` (column index, value) slots, unused slots carry value 0.
A sparse sketch stores this form for Phi and for Phi^T (built once on the host), so both directions
are gathers.
"""

from __future__ import annotations

__all__ = ["ell_matvec"]

_MAX_GATHER = 1 << 22  # elements gathered per chunk and batch row: bounds the temporary


def ell_matvec(xp, x, idx, vals):
    """``y[..., r] = sum_s vals[r, s] * x[..., idx[r, s]]`` for ``idx, vals`` of shape ``(R, S)``."""
    rows, slots = int(idx.shape[0]), int(idx.shape[1])
    batch = x.shape[:-1]
    step = max(1, _MAX_GATHER // max(1, slots))
    parts = []
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        flat = xp.reshape(idx[r0:r1, :], ((r1 - r0) * slots,))
        g = xp.reshape(xp.take(x, flat, axis=-1), (*batch, r1 - r0, slots))
        parts.append(xp.sum(g * vals[r0:r1, :], axis=-1))
    if not parts:
        return xp.zeros((*batch, 0), dtype=x.dtype)
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=-1)
