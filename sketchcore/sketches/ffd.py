"""FFD (Fastfood as used in intrinsic-dimension work), the baseline the paper beats.

``Phi x = sqrt(D'/D) R_D sum_b B_b H Pi_b G_b H x_b``: x is zero-padded and cut into blocks of size
``D' = next_pow2(D)``; every block has its own signs ``B_b``, permutation ``Pi_b`` (a global
gather: the "lookup") and Gaussian diagonal ``G_b``; ``H`` is the normalized Hadamard transform of
size D'. ``E ||Phi x||^2 = ||x||^2``, but Thm 3.1: there is no sign diagonal in front of the first
``H``, so an input like one Hadamard column (``x_b = H e_1``) is mapped to ``g_1 * (column)`` and
its norm is a single Gaussian's, whatever D is. AFFD fixes this with ``B`` up front.
"""

from __future__ import annotations

import numpy as np

from .. import _random as rnd
from ..kron_plans import KronPlan, next_pow2
from .base import SketchAlgorithm

__all__ = ["FFD"]


class FFD(SketchAlgorithm):
    name = "ffd"
    summary = "sum_b B_b H Pi_b G_b H x_b: Fastfood per block of size D (global permutation)"
    default_options = {}
    variance_factor = 3.4  # measured: 0.9-3.3 (docs/choosing.md, "out_dim='auto'")

    def max_out_dim(self) -> int:
        return next_pow2(self.in_dim)

    def _build(self) -> None:
        self.d_pad = next_pow2(self.out_dim)
        self.nb = -(-self.in_dim // self.d_pad)
        self.n_pad = self.nb * self.d_pad
        self.s = self.scale(self.d_pad, self.out_dim)
        # B, G, the permutation and its inverse: 8 bytes each per padded coordinate
        self.check_fits(n_pad=self.n_pad, param_bytes=32 * self.n_pad)
        self.plan = KronPlan((self.d_pad,))
        shape = (self.nb, self.d_pad)
        self.params.add("B", rnd.signs(self.seed, "B", self.n_pad).reshape(shape))
        self.params.add("G", rnd.gaussians(self.seed, "G", self.n_pad).reshape(shape))
        perms = np.stack([rnd.permutation(self.seed, f"Pi{b}", self.d_pad) for b in range(self.nb)])
        offsets = (np.arange(self.nb, dtype=np.int64) * self.d_pad)[:, None]
        inverse = np.argsort(perms, axis=1)
        self.params.add("perm", (perms + offsets).ravel())
        self.params.add("perm_t", (inverse + offsets).ravel(), derived=True)

    def _blocks(self, xp, z, name):
        batch = z.shape[:-2]
        flat = xp.reshape(z, (*batch, self.n_pad))
        flat = xp.take(flat, self.params.get(xp, z, name, index=True), axis=-1)
        return xp.reshape(flat, (*batch, self.nb, self.d_pad))

    def apply(self, be, x):
        xp = be.namespace()
        z = self.pad(xp, x, self.n_pad)
        z = xp.reshape(z, (*x.shape[:-1], self.nb, self.d_pad))
        z = be.hadamard(z, self.plan)
        z = self._blocks(xp, z * self.params.get(xp, z, "G"), "perm")
        z = be.hadamard(z, self.plan) * self.params.get(xp, z, "B")
        return xp.sum(z, axis=-2)[..., : self.out_dim] * self.s

    def transpose(self, be, y):
        xp = be.namespace()
        z = self.pad(xp, y * self.s, self.d_pad)
        z = xp.reshape(z, (*y.shape[:-1], 1, self.d_pad)) * self.params.get(xp, y, "B")
        z = be.hadamard(z, self.plan)
        z = self._blocks(xp, z, "perm_t") * self.params.get(xp, z, "G")
        z = be.hadamard(z, self.plan)
        return xp.reshape(z, (*y.shape[:-1], self.n_pad))[..., : self.in_dim]
