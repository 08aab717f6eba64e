"""A ``KronPlan``'s in-factor permutations as one gather index over the whole last axis.

``take_factors`` permutes inside each Kronecker factor with one ``take`` per factor (one pass over
memory each); the composition of those takes is itself a gather ``y = x[..., g]`` with a single
global index ``g``, built once on the host and kept per device. Plans are held weakly, so an
operator that is dropped takes its indices with it.
"""

from __future__ import annotations

import weakref

import numpy as np

__all__ = ["global_take", "device_take"]

_HOST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DEVICE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def global_take(sizes, perms) -> np.ndarray | None:
    """``g`` with ``take_factors(x, sizes, perms) == x[..., g]`` (None when all are identity)."""
    if all(p is None for p in perms):
        return None
    g = np.arange(int(np.prod(sizes)), dtype=np.int64).reshape(sizes)
    for axis, p in enumerate(perms):
        if p is not None:
            g = np.take(g, p, axis=axis)
    return g.ravel()


def _host(plan) -> dict:
    entry = _HOST.get(plan)
    if entry is None:
        entry = {
            "rows": global_take(plan.sizes, plan.row_perm),
            "cols": global_take(plan.sizes, plan.col_perm),
        }
        _HOST[plan] = entry
    return entry


def device_take(plan, side: str, device):
    """The global gather of ``plan``'s ``side`` ("rows" or "cols") as an int64 tensor on
    ``device``, or None when that side has no permutation."""
    import torch

    host = _host(plan)[side]
    if host is None:
        return None
    per_plan = _DEVICE.setdefault(plan, {})
    key = (side, str(device))
    t = per_plan.get(key)
    if t is None:
        t = torch.from_numpy(host).to(device)
        per_plan[key] = t
    return t
