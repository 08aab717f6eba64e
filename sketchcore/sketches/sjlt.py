"""SJLT: the sparse Johnson-Lindenstrauss transform (CountSketch with ``s`` non-zeros per column).

``Phi`` is a ``D x N`` matrix with exactly ``s = nnz_per_col`` non-zeros in every column, each
``+-1/sqrt(s)`` with an independent random sign. The ``D`` rows are cut into ``s`` contiguous
blocks of (nearly) equal size and column ``j`` has one non-zero in each block, at a uniformly
random row of that block (Kane and Nelson's block construction): the ``s`` rows of a column are
distinct, so every column has norm exactly 1 and ``E[Phi^T Phi] = I``. ``s = 1`` is CountSketch.
No padding: the map works on the ``N`` coordinates as they are.

The array API has no scatter-add, so both directions are gathers (``Backend.ell_matvec``):
``Phi`` is stored in padded-row (ELL) form, each output row listing the input columns that hash to
it (about ``N s / D`` of them, padded to the longest row), and ``Phi^T`` in the per-column form,
``s`` slots per input coordinate, rebuilt from the seed on first use.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _random as rnd
from ..kron_plans import next_pow2
from .base import SketchAlgorithm, check_int_option

__all__ = ["SJLT", "DEFAULT_NNZ_PER_COL"]

#: default non-zeros per column: 4 (see docs/algorithms.md for the measurement behind it)
DEFAULT_NNZ_PER_COL = 4


def _blocks(d: int, s: int) -> list[tuple[int, int]]:
    """``(first row, rows)`` of the ``s`` row blocks of ``d`` rows, sizes differing by <= 1."""
    return [(b * d // s, (b + 1) * d // s - b * d // s) for b in range(s)]


def _stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """The stable sorting permutation of integer ``keys`` in ``[0, bound)``, by LSD radix passes
    of 16 bits (numpy sorts 16-bit integers with a radix sort: linear time)."""
    if bound <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    high = (keys[order] >> 16).astype(np.uint32)
    return order[np.argsort(high, kind="stable")]


class SJLT(SketchAlgorithm):
    name = "sjlt"
    variance_factor = 1.4  # measured: 0.8-1.35 (docs/choosing.md, "out_dim='auto'")
    summary = "sparse JL / CountSketch: s random +-1/sqrt(s) per column (gathers, O(N s))"
    default_options = {"nnz_per_col": DEFAULT_NNZ_PER_COL}

    def max_out_dim(self) -> int:
        return next_pow2(self.in_dim)

    def _build(self) -> None:
        s = check_int_option("sjlt", "nnz_per_col", self.options["nnz_per_col"])
        self.s = min(s, self.out_dim)  # a column cannot have more distinct rows than D
        self.options["nnz_per_col"] = self.s
        n, d = self.in_dim, self.out_dim
        mean = n * self.s / d  # expected non-zeros per output row
        width = mean + 6 * math.sqrt(mean) + 1  # a generous bound on the longest row
        self.check_fits(  # Phi as ELL (index + value per slot), Phi^T: N x s index/value pairs
            n_pad=n, param_bytes=int(16 * d * width + 16 * n * self.s),
            cause=f"nnz_per_col={self.s} with in_dim={n} (in_dim x nnz_per_col non-zeros, an "
                  "index and a value each, stored for Phi and for Phi^T)",
            fix=f"Lower nnz_per_col (default {DEFAULT_NNZ_PER_COL}), or use a sketch that keeps "
                "O(in_dim) numbers (algo='srht' or 'affd').",
        )
        parts_idx, parts_val = [], []
        scale = 1.0 / math.sqrt(self.s)
        for b, (start, size) in enumerate(_blocks(d, self.s)):
            rows, vals = self._column_entries(b, size, scale)
            order = _stable_order(rows, size)  # columns grouped by row, ascending within a row
            counts = np.bincount(rows, minlength=size)
            first = np.concatenate(([0], np.cumsum(counts)[:-1]))
            sorted_rows = rows[order]
            slot = np.arange(n, dtype=np.int64) - first[sorted_rows]
            w = max(1, int(counts.max()))
            idx = np.zeros((size, w), dtype=np.int64)
            val = np.zeros((size, w), dtype=np.float64)
            idx[sorted_rows, slot] = order
            val[sorted_rows, slot] = vals[order]
            parts_idx.append(idx)
            parts_val.append(val)
        width = max(p.shape[1] for p in parts_idx)
        self.params.add("idx", np.concatenate([_widen(p, width) for p in parts_idx]))
        self.params.add("vals", np.concatenate([_widen(p, width) for p in parts_val]))
        self._t_built = False

    def _column_entries(self, block: int, size: int, scale: float):
        """Row (within ``block``) and value of every column's non-zero in that block."""
        rows = rnd.rng(self.seed, "sjlt/rows", block).integers(0, size, self.in_dim)
        bits = rnd.rng(self.seed, "sjlt/signs", block).integers(0, 2, self.in_dim, dtype=np.int8)
        return rows.astype(np.int64), scale * (1.0 - 2.0 * bits.astype(np.float64))

    def _build_transpose(self) -> None:
        """``Phi^T`` in per-column form: row ``j`` lists column ``j``'s ``s`` rows and values
        (regenerated from the seed, the same numbers as the ELL form)."""
        scale = 1.0 / math.sqrt(self.s)
        idx_t = np.empty((self.in_dim, self.s), dtype=np.int64)
        val_t = np.empty((self.in_dim, self.s), dtype=np.float64)
        for b, (start, size) in enumerate(_blocks(self.out_dim, self.s)):
            rows, vals = self._column_entries(b, size, scale)
            idx_t[:, b] = rows + start
            val_t[:, b] = vals
        self.params.add("idx_t", idx_t, derived=True)
        self.params.add("vals_t", val_t, derived=True)
        self._t_built = True

    def apply(self, be, x):
        xp = be.namespace()
        idx = self.params.get(xp, x, "idx", index=True)
        return be.ell_matvec(x, idx, self.params.get(xp, x, "vals"))

    def transpose(self, be, y):
        xp = be.namespace()
        if not self._t_built:
            self._build_transpose()
        idx = self.params.get(xp, y, "idx_t", index=True)
        return be.ell_matvec(y, idx, self.params.get(xp, y, "vals_t"))


def _widen(a: np.ndarray, width: int) -> np.ndarray:
    """``a`` with zero columns appended up to ``width`` (padding slots: index 0, value 0)."""
    if a.shape[1] == width:
        return a
    return np.concatenate([a, np.zeros((a.shape[0], width - a.shape[1]), dtype=a.dtype)], axis=1)
