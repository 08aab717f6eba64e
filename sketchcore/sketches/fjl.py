"""FJL (Ailon-Chazelle): ``Phi x = sqrt(N'/D) G_s H_N' B x`` with a sparse Gaussian ``G_s``.

Row r of ``G_s`` has ``k = nnz_per_row`` non-zeros at uniformly random columns (with
replacement), each ``N(0, 1/k)``, so ``E ||Phi x||^2 = ||x||^2`` exactly. Default
``k = ceil(log2 N')`` (the paper's Theta(log^2 M) per row with log M = sqrt(log2 N')): after
``H B`` the coordinates are flat, and k only guards against what is left of their spread.
The product with ``G_s`` is a gather (the "lookup" the paper removes); ``G_s^T`` is stored in the
same padded-row form, built on first use, so both directions are gathers.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _random as rnd
from ..kron_plans import KronPlan, next_pow2
from .base import SketchAlgorithm, check_int_option

__all__ = ["FJL"]


class FJL(SketchAlgorithm):
    name = "fjl"
    variance_factor = 1.4  # measured: 0.9-1.4 (docs/choosing.md, "out_dim='auto'")
    summary = "sqrt(N/D) G_s H B x: Hadamard then a sparse Gaussian matrix (gathers)"
    default_options = {"nnz_per_row": None}

    def max_out_dim(self) -> int:
        return next_pow2(self.in_dim)

    def _build(self) -> None:
        self.n_pad = next_pow2(self.in_dim)
        k = self.options["nnz_per_row"]
        # log2(n_pad) of the power of two, exactly (no floating-point log)
        k = max(1, self.n_pad.bit_length() - 1) if k is None else k
        self.k = check_int_option("fjl", "nnz_per_row", k)
        self.options["nnz_per_row"] = self.k
        default = max(1, self.n_pad.bit_length() - 1)
        self.check_fits(  # signs, and an index and a value per non-zero
            n_pad=self.n_pad, param_bytes=8 * self.n_pad + 16 * self.out_dim * self.k,
            cause=f"nnz_per_row={self.k} with out_dim={self.out_dim} (out_dim x nnz_per_row "
                  "non-zeros, 16 bytes each)",
            fix=f"Lower nnz_per_row (the default for this in_dim is {default}).",
        )
        self.plan = KronPlan((self.n_pad,))
        self.params.add("B", rnd.signs(self.seed, "B", self.n_pad))
        cols = rnd.rng(self.seed, "fjl/cols").integers(0, self.n_pad, size=(self.out_dim, self.k))
        vals = rnd.gaussians(self.seed, "fjl/vals", (self.out_dim, self.k))
        vals *= math.sqrt(self.n_pad / (self.out_dim * self.k))
        self.params.add("idx", cols.astype(np.int64))
        self.params.add("vals", vals)
        self._t_built = False

    def _build_transpose(self) -> None:
        cols = self.params.host["idx"].ravel()
        rows = np.repeat(np.arange(self.out_dim, dtype=np.int64), self.k)
        vals = self.params.host["vals"].ravel()
        order = np.argsort(cols, kind="stable")
        cols, rows, vals = cols[order], rows[order], vals[order]
        counts = np.bincount(cols, minlength=self.n_pad)
        width = max(1, int(counts.max()) if counts.size else 1)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        slot = np.arange(cols.size) - starts[cols]
        idx_t = np.zeros((self.n_pad, width), dtype=np.int64)
        val_t = np.zeros((self.n_pad, width), dtype=np.float64)
        idx_t[cols, slot] = rows
        val_t[cols, slot] = vals
        self.params.add("idx_t", idx_t, derived=True)
        self.params.add("vals_t", val_t, derived=True)
        self._t_built = True

    def apply(self, be, x):
        xp = be.namespace()
        z = self.pad(xp, x, self.n_pad)
        z = be.hadamard(z, self.plan, diag=self.params.get(xp, z, "B"))
        idx = self.params.get(xp, z, "idx", index=True)
        return be.ell_matvec(z, idx, self.params.get(xp, z, "vals"))

    def transpose(self, be, y):
        xp = be.namespace()
        if not self._t_built:
            self._build_transpose()
        idx = self.params.get(xp, y, "idx_t", index=True)
        z = be.ell_matvec(y, idx, self.params.get(xp, y, "vals_t"))
        z = be.hadamard(z, self.plan) * self.params.get(xp, z, "B")
        return z[..., : self.in_dim]
