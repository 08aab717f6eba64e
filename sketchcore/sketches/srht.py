"""SRHT: the subsampled randomized Hadamard transform ``Phi x = sqrt(N'/D) R_S H_N' B x``.

``B`` random signs, ``H_N'`` the normalized Walsh-Hadamard transform of the input zero-padded to
``N' = next_pow2(N)``, ``R_S`` keeps the ``D`` coordinates of a uniformly random subset ``S``
drawn without replacement (kept in ascending order). ``E ||Phi x||^2 = ||x||^2`` exactly: every
coordinate of ``H B x`` has ``E z_i^2 = ||x||^2 / N'``, and each is kept with probability
``D / N'``. With ``D = N'`` the map is orthogonal.

Kernels: the transform is ``Backend.hadamard`` on a one-factor plan (each backend's FWHT), the
sampling a gather of ``D`` coordinates. The transpose puts ``y`` back at ``S`` with the gather of
a permutation whose first ``D`` entries are ``S``: the column permutation of the transposed plan,
which backends fuse into their transform.
"""

from __future__ import annotations

import numpy as np

from .. import _random as rnd
from ..kron_plans import KronPlan, next_pow2
from .base import SketchAlgorithm

__all__ = ["SRHT"]


class SRHT(SketchAlgorithm):
    name = "srht"
    variance_factor = 1.1  # measured: 0.6-1.07 (in theory 1 - D/N')
    summary = "sqrt(N/D) R_S H B x: Hadamard, then D coordinates sampled without replacement"
    default_options = {}

    def max_out_dim(self) -> int:
        return next_pow2(self.in_dim)

    def _build(self) -> None:
        self.n_pad = next_pow2(self.in_dim)
        self.check_fits(  # signs, the sample, and the permutation and its inverse (transpose)
            n_pad=self.n_pad, param_bytes=24 * self.n_pad + 8 * self.out_dim)
        self.s = self.scale(self.n_pad, self.out_dim)
        self.plan = KronPlan((self.n_pad,))
        self.params.add("B", rnd.signs(self.seed, "B", self.n_pad))
        chosen = rnd.rng(self.seed, "srht/sample").choice(self.n_pad, self.out_dim, replace=False)
        self.params.add("S", np.sort(chosen).astype(np.int64))
        self._plan_t: KronPlan | None = None

    def _transpose_plan(self) -> KronPlan:
        """``H P'`` with ``P'`` the gather that puts coordinate ``k < D`` of a padded ``y`` at
        ``S[k]`` and a zero everywhere else: the inverse of ``perm = [S, the rest]``."""
        if self._plan_t is None:
            chosen = self.params.host["S"]
            rest = np.ones(self.n_pad, dtype=bool)
            rest[chosen] = False
            perm = np.concatenate([chosen, np.flatnonzero(rest)]).astype(np.int64)
            self._plan_t = KronPlan((self.n_pad,), row_perm=[perm]).transpose()
        return self._plan_t

    def apply(self, be, x):
        xp = be.namespace()
        z = self.pad(xp, x, self.n_pad)
        z = be.hadamard(z, self.plan, diag=self.params.get(xp, z, "B"))
        return xp.take(z, self.params.get(xp, z, "S", index=True), axis=-1) * self.s

    def transpose(self, be, y):
        xp = be.namespace()
        z = self.pad(xp, y * self.s, self.n_pad)
        z = be.hadamard(z, self._transpose_plan()) * self.params.get(xp, z, "B")
        return z[..., : self.in_dim]
