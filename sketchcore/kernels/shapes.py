"""Shape helpers shared by the kernels."""

from __future__ import annotations

from ..array_namespace import device_of

__all__ = ["pad_last", "split_last"]


def pad_last(xp, x, n: int):
    """Zero-pad the last axis of ``x`` to length ``n`` (no copy when already that long)."""
    m = x.shape[-1]
    if m == n:
        return x
    zeros = xp.zeros((*x.shape[:-1], n - m), dtype=x.dtype, device=device_of(x))
    return xp.concat((x, zeros), axis=-1)


def split_last(x, sizes) -> tuple:
    """The shape with the last axis split into ``sizes``."""
    return (*x.shape[:-1], *sizes)
