"""QK: a Kronecker product of Haar-random row blocks (eq. 8).

``Phi x = sqrt(N'/D) R_D (Q^(1) x ... x Q^(K)) x`` with ``Q^(i)`` the first ``D_i`` rows of a Haar
orthogonal ``B_i x B_i`` matrix, ``prod B_i = N'`` and ``prod D_i = D'``. Only the small factors
are random (memory ``sum B_i D_i``) and the map is pure matmuls, no gathers.

Factor choice (the paper leaves it open): by default ``N' = next_pow2(N)`` and
``D' = next_pow2(D)``, split into ``K`` balanced powers of two, ``K = 2`` unless a factor would
exceed 2^15 (then more); the first ``D`` coordinates are kept. Balanced factors maximise the
smallest ``D_i``, which is what Thm 3.3's bound depends on. ``in_factors`` / ``out_factors`` give
the shapes explicitly (any integers, ``D_i <= B_i``, ``prod B_i >= N``, ``prod D_i >= D``).
"""

from __future__ import annotations

import math

from .. import _random as rnd
from .._errors import InvalidOptionError, describe_value
from ..kron_plans import balanced_factors, next_pow2
from .base import SketchAlgorithm, check_int_option

__all__ = ["QK"]

_MAX_AUTO_FACTOR_LOG2 = 15


class QK(SketchAlgorithm):
    name = "qk"
    summary = "sqrt(N/D) (Q1 x ... x QK) x: Kronecker product of small Haar blocks, matmuls only"
    default_options = {"in_factors": None, "out_factors": None, "num_factors": None}

    @classmethod
    def variance_factor_at(cls, out_dim: int) -> float:
        """QK's error variance grows like sqrt(D) times a dense sketch's: a rank-one (Kronecker)
        input keeps ~sum_i 2/D_i of relative variance, not 2/D. Measured on gradients:
        0.1-0.47 sqrt(D) for D = 2^8..2^12 (docs/choosing.md, "out_dim='auto'")."""
        return max(1.0, 0.5 * math.sqrt(out_dim))

    def max_out_dim(self) -> int:
        given = self.options.get("in_factors")
        return math.prod(_factors("in_factors", given)) if given else next_pow2(self.in_dim)

    def _shapes(self):
        o = self.options
        if (o["in_factors"] is None) != (o["out_factors"] is None):
            raise InvalidOptionError(
                "qk: give both in_factors and out_factors, or neither (automatic choice)."
            )
        if o["in_factors"] is not None:
            ins = _factors("in_factors", o["in_factors"])
            outs = _factors("out_factors", o["out_factors"])
            show_in, show_out = describe_value(ins), describe_value(outs)
            if len(ins) != len(outs) or len(ins) < 2:
                raise InvalidOptionError(
                    f"qk: in_factors {show_in} and out_factors {show_out} need the same length "
                    "K >= 2."
                )
            if any(d > b for d, b in zip(outs, ins)):
                raise InvalidOptionError(
                    f"qk: need out_factors <= in_factors, got {show_out} vs {show_in}.")
            if math.prod(ins) < self.in_dim or math.prod(outs) < self.out_dim:
                raise InvalidOptionError(
                    f"qk: prod(in_factors)={describe_value(math.prod(ins))} must be >= "
                    f"in_dim={self.in_dim} and prod(out_factors)={describe_value(math.prod(outs))}"
                    f" >= out_dim={self.out_dim}."
                )
            return ins, outs
        n_pad = next_pow2(self.in_dim)
        log_n = n_pad.bit_length() - 1
        k = o["num_factors"]
        if k is None:
            k = max(2, -(-log_n // _MAX_AUTO_FACTOR_LOG2))
        k = check_int_option("qk", "num_factors", k, low=2)
        ins = balanced_factors(log_n, k)
        outs = balanced_factors(next_pow2(self.out_dim).bit_length() - 1, k)
        return ins, outs

    def _build(self) -> None:
        given = self.options["in_factors"] is not None
        ins, outs = self._shapes()
        self.options["in_factors"], self.options["out_factors"] = ins, outs
        self.options["num_factors"] = len(ins)
        self.n_pad = math.prod(ins)
        self.d_pad = math.prod(outs)
        self.check_fits(  # each factor, its transpose, and the QR's Gaussian and Q
            n_pad=self.n_pad, param_bytes=sum(4 * 8 * b * d for b, d in zip(ins, outs)),
            cause=f"in_factors={describe_value(list(ins))} with "
                  f"out_factors={describe_value(list(outs))}",
            fix="Use more, smaller factors (e.g. num_factors=3, or the automatic choice).",
            length_cause=f"in_factors={describe_value(list(ins))}" if given else "",
        )
        self.s = self.scale(self.n_pad, self.out_dim)
        for i, (d, b) in enumerate(zip(outs, ins)):
            q = rnd.haar_rows(self.seed, f"qk/Q{i}", d, b)
            self.params.add(f"Q{i}", q)
            self.params.add(f"QT{i}", q.T.copy())
        self.k = len(ins)

    def apply(self, be, x):
        xp = be.namespace()
        z = self.pad(xp, x, self.n_pad)
        z = be.kron_matmul(z, [self.params.get(xp, z, f"Q{i}") for i in range(self.k)])
        return z[..., : self.out_dim] * self.s

    def transpose(self, be, y):
        xp = be.namespace()
        z = self.pad(xp, y * self.s, self.d_pad)
        z = be.kron_matmul(z, [self.params.get(xp, z, f"QT{i}") for i in range(self.k)])
        return z[..., : self.in_dim]


def _factors(name: str, value) -> tuple[int, ...]:
    """A factor shape option: a tuple or list of integers >= 1."""
    if not isinstance(value, (tuple, list)):
        raise InvalidOptionError(
            f"qk: option {name} must be a tuple of integers, got {describe_value(value)} "
            f"({type(value).__name__}); pass e.g. {name}=(64, 64)."
        )
    return tuple(check_int_option("qk", name, b) for b in value)
