"""AFFD and AFJL: the paper's lookup-free sketches (eqs. 6 and 7).

``affd: Phi x = R_D( sqrt(N'/D) H^{pi2} G H^{pi1} B x )``
``afjl: Phi x = R_D( sqrt(N'/D) G H^{pi1} B x )``

``H^{pi1}`` permutes rows inside each Kronecker factor, ``H^{pi2}`` columns; ``B`` random signs,
``G`` a Gaussian diagonal, ``R_D`` keeps the first D coordinates, ``N'`` the input size padded to a
power of two. With ``preconditioner="fft"`` the Hadamard transforms become discrete Hartley
transforms (same Kronecker permutations); with ``"q"`` they become Kronecker products of Haar
factors and ``B`` is dropped (the Haar factors are already sign- and permutation-invariant).
``E ||Phi x||^2 = ||x||^2`` holds exactly for all three (see docs/algorithms.md).
"""

from __future__ import annotations

from .. import _random as rnd
from ..kron_plans import next_pow2, pow2_factors
from .base import SketchAlgorithm, check_pow2_option
from .preconditioners import PRECONDITIONERS, make_preconditioner

__all__ = ["AFFD", "AFJL"]


class _Preconditioned(SketchAlgorithm):
    default_options = {"preconditioner": "hadamard", "max_block": 1024}

    def max_out_dim(self) -> int:
        return next_pow2(self.in_dim)

    def _common(self) -> None:
        kind = self.options["preconditioner"]
        if kind not in PRECONDITIONERS:
            from .._errors import unknown

            raise unknown(f"preconditioner for algo={self.name!r}:", kind, PRECONDITIONERS)
        self.options["max_block"] = check_pow2_option(self.name, "max_block", self.options["max_block"])
        self.n_pad = next_pow2(self.in_dim)
        self._check_fits(kind)
        self.s = self.scale(self.n_pad, self.out_dim)
        self.pre1 = make_preconditioner(
            kind, self.params, "pre1", self.seed, self.n_pad, self.options["max_block"], "rows"
        )
        self.signs = self.pre1.uses_signs
        if self.signs:
            self.params.add("B", rnd.signs(self.seed, "B", self.n_pad))

    #: how many preconditioners (pre1, pre2) and length-n_pad diagonals (B, G) the map keeps
    transforms, diagonals = 1, 1

    def _check_fits(self, kind: str) -> None:
        sizes = pow2_factors(self.n_pad, self.options["max_block"])
        signs = 0 if kind == "q" else self.n_pad * 8
        diag = self.n_pad * 8 if self.diagonals else self.out_dim * 8
        if kind == "q":  # each Haar factor, its transpose, and the QR's Gaussian and Q
            per = sum(4 * b * b * 8 for b in sizes)
            cause = (f"preconditioner='q' with max_block={self.options['max_block']} (Haar factors "
                     f"{list(sizes)} for in_dim={self.in_dim})")
            fix = "Lower max_block (e.g. 1024) or use preconditioner='hadamard'."
        else:  # a permutation per factor
            per = sum(sizes) * 8
            cause, fix = "", ""
        self.check_fits(n_pad=self.n_pad, param_bytes=self.transforms * per + signs + diag,
                        cause=cause, fix=fix)

    def _b(self, xp, like):
        return self.params.get(xp, like, "B") if self.signs else None


class AFFD(_Preconditioned):
    name = "affd"
    summary = "R_D sqrt(N/D) H^pi2 G H^pi1 B x: lookup-free Fastfood with a guarantee (Thm 3.2)"
    variance_factor = 1.8  # measured: 0.98-1.78 (docs/choosing.md, "out_dim='auto'")
    transforms, diagonals = 2, 1

    def _build(self) -> None:
        self._common()
        self.pre2 = make_preconditioner(
            self.options["preconditioner"], self.params, "pre2", self.seed, self.n_pad,
            self.options["max_block"], "cols",
        )
        self.params.add("G", rnd.gaussians(self.seed, "G", self.n_pad))

    def apply(self, be, x):
        xp = be.namespace()
        z = self.pad(xp, x, self.n_pad)
        z = self.pre1.apply(be, z, diag=self._b(xp, z))
        z = self.pre2.apply(be, z, diag=self.params.get(xp, z, "G"))
        return z[..., : self.out_dim] * self.s

    def transpose(self, be, y):
        xp = be.namespace()
        z = self.pad(xp, y * self.s, self.n_pad)
        z = self.pre2.transpose(be, z)
        z = self.pre1.transpose(be, z, diag=self.params.get(xp, z, "G"))
        if self.signs:
            z = z * self.params.get(xp, z, "B")
        return z[..., : self.in_dim]


class AFJL(_Preconditioned):
    name = "afjl"
    summary = "R_D sqrt(N/D) G H^pi1 B x: the cheapest lookup-free sketch (one transform)"
    variance_factor = 12.0  # measured: 2.7-11.2 (G's Gaussian diagonal adds variance)
    transforms, diagonals = 1, 0

    def _build(self) -> None:
        self._common()
        self.params.add("G", rnd.gaussians(self.seed, "G", self.out_dim) * self.s)

    def apply(self, be, x):
        xp = be.namespace()
        z = self.pad(xp, x, self.n_pad)
        z = self.pre1.apply(be, z, diag=self._b(xp, z))
        return z[..., : self.out_dim] * self.params.get(xp, z, "G")

    def transpose(self, be, y):
        xp = be.namespace()
        z = self.pad(xp, y * self.params.get(xp, y, "G"), self.n_pad)
        z = self.pre1.transpose(be, z)
        if self.signs:
            z = z * self.params.get(xp, z, "B")
        return z[..., : self.in_dim]
