"""Small helpers shared by the core tests: the algorithm x option grid and tolerances."""

from __future__ import annotations

import numpy as np

#: every algorithm with every preconditioner variant
CONFIGS = [
    ("dense", {}),
    ("fjl", {}),
    ("ffd", {}),
    ("affd", {}),
    ("affd", {"preconditioner": "fft"}),
    ("affd", {"preconditioner": "q"}),
    ("afjl", {}),
    ("afjl", {"preconditioner": "fft"}),
    ("afjl", {"preconditioner": "q"}),
    ("qk", {}),
]
CONFIG_IDS = [a + ("-" + o["preconditioner"] if o else "") for a, o in CONFIGS]

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def small_blocks(algo: str, options: dict) -> dict:
    """Use small Kronecker factors so several factors (and in-factor permutations) are exercised."""
    return {**options, "max_block": 8} if algo in ("affd", "afjl") else dict(options)


def adjoint_gap(op, x, y) -> float:
    """|<Phi x, y> - <x, Phi^T y>| relative to the scale of the terms summed."""
    px = np.asarray(op.apply(x))
    pty = np.asarray(op.transpose(y))
    lhs = float(np.sum(px.astype(np.float64) * y))
    rhs = float(np.sum(x.astype(np.float64) * pty))
    scale = float(np.linalg.norm(px) * np.linalg.norm(y)) + 1e-300
    return abs(lhs - rhs) / scale


def assert_normwise_close(got, want, rtol: float, floor: float = 0.0) -> None:
    """Max error at most ``rtol`` times the largest reference entry (sums of many terms that
    cancel make an elementwise relative test meaningless), or times ``floor`` when that is larger:
    with very few outputs the largest one can itself be a near-cancellation, so callers pass the
    typical entry size (e.g. ``||x|| / sqrt(D)`` for a sketch to D)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, floor, 1e-30)
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol:g} * {scale:.3g}"
