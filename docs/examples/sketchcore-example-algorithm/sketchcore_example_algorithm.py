"""A complete third-party sketchcore algorithm in one module: a dense Rademacher sketch.

``Phi = S / sqrt(D)`` with ``S`` a ``D x N`` matrix of independent random signs (Achlioptas's
database-friendly projection): ``E[Phi^T Phi] = I``. The signs are a pure function of the seed,
drawn once on the host with numpy, so the map is the same on every backend; the two directions are
matrix products written with the array API, so numpy, torch, jax and cupy all run it. It keeps
the whole ``D x N`` matrix: for small N only (``check_fits`` refuses what would not fit).
"""

from __future__ import annotations

import math

import numpy as np

import sketchcore

__all__ = ["Rademacher"]


class Rademacher(sketchcore.SketchAlgorithm):
    name = "rademacher"
    summary = "S x / sqrt(D), S a stored D x N matrix of random signs (example plugin)"
    default_options = {}  # keyword options and their defaults (none here)
    variance_factor = 1.0  # as a dense Gaussian sketch (sketchcore.quality.calibrate measures it)

    def max_out_dim(self) -> int:
        return self.in_dim

    def _build(self) -> None:
        self.check_fits(n_pad=self.in_dim, param_bytes=16 * self.out_dim * self.in_dim,  # S, S^T
                        fix="Use a structured sketch (algo='affd' or 'srht') for large inputs.")
        gen = np.random.default_rng([self.seed, 0x5241_4445])  # (seed, a constant of this map)
        bits = gen.integers(0, 2, (self.out_dim, self.in_dim), dtype=np.int8)
        signs = (1.0 - 2.0 * bits) / math.sqrt(self.out_dim)
        self.params.add("S", signs)  # (D, N), float64 on the host; part of describe()'s digest
        self.params.add("ST", signs.T.copy(), derived=True)

    def apply(self, be, x):
        xp = be.namespace()
        return xp.matmul(x, self.params.get(xp, x, "ST"))  # (..., N) @ (N, D)

    def transpose(self, be, y):
        xp = be.namespace()
        return xp.matmul(y, self.params.get(xp, y, "S"))  # (..., D) @ (D, N)


@sketchcore.hookimpl
def sketchcore_register_algorithms(register):
    register(Rademacher)
