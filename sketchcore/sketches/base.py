"""The base of every sketch: sizes, seed, options, host parameters, and the two directions."""

from __future__ import annotations

import math
from typing import ClassVar

from .._errors import InvalidOptionError, unknown
from ..kernels import pad_last
from ..structure import ParamCache

__all__ = ["SketchAlgorithm", "check_pow2_option", "check_int_option"]


class SketchAlgorithm:
    """A seeded random linear map ``Phi: R^in_dim -> R^out_dim`` with its transpose.

    Subclasses set ``name``, ``summary`` and ``options`` (name -> default), build their host
    parameters in ``_build`` and implement ``forward`` / ``adjoint`` on arrays whose last axis is
    ``in_dim`` / ``out_dim``, using only the namespace and kernels of the backend they get.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[dict[str, object]] = {}

    def __init__(self, in_dim: int, out_dim: int, seed: int, **options) -> None:
        bad = sorted(set(options) - set(self.options))
        if bad:
            raise unknown(
                f"option for algo={self.name!r}:",
                bad[0],
                self.options or ["(none)"],
                "Pass only these keyword options.",
            )
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.seed = seed
        self.opts = {**self.options, **options}
        self.params = ParamCache()
        limit = self.max_out_dim()
        if out_dim > limit:
            raise InvalidOptionError(
                f"out_dim={out_dim} is larger than algo={self.name!r} allows for in_dim={in_dim} "
                f"(at most {limit}, the padded input size); lower out_dim or use algo='dense'."
            )
        self._build()

    # ---- to implement -----------------------------------------------------------------------
    def max_out_dim(self) -> int:
        raise NotImplementedError

    def _build(self) -> None:
        raise NotImplementedError

    def forward(self, be, x):
        raise NotImplementedError

    def adjoint(self, be, y):
        raise NotImplementedError

    #: scratch budget of one kernel call, in elements (rows x padded length); see rows_per_call
    SCRATCH_ELEMENTS = 1 << 24

    def rows_per_call(self) -> int | None:
        """How many batch rows one call may process (None: all). The structured sketches keep
        a few padded-length temporaries per row; bounding the rows keeps that scratch at
        ``SCRATCH_ELEMENTS`` whatever the batch size."""
        width = max(getattr(self, "n_pad", self.in_dim), self.out_dim)
        return max(1, self.SCRATCH_ELEMENTS // width)

    # ---- helpers ----------------------------------------------------------------------------
    def describe(self) -> dict:
        """What identifies this map (stored with sketches; equal descriptions = equal maps)."""
        return {
            "algo": self.name,
            "in_dim": self.in_dim,
            "out_dim": self.out_dim,
            "seed": self.seed,
            "options": {k: _plain(v) for k, v in sorted(self.opts.items())},
        }

    @staticmethod
    def pad(xp, x, n):
        return pad_last(xp, x, n)

    @staticmethod
    def scale(n: int, d: int) -> float:
        return math.sqrt(n / d)


def _plain(v):
    if isinstance(v, tuple):
        return list(v)
    return v


def check_int_option(algo: str, name: str, value, low: int = 1) -> int:
    import operator

    if isinstance(value, bool):
        raise InvalidOptionError(f"{algo}: option {name} must be an integer >= {low}, got {value!r}.")
    try:
        v = operator.index(value)
    except TypeError:
        raise InvalidOptionError(
            f"{algo}: option {name} must be an integer >= {low}, got {value!r}."
        ) from None
    if v < low:
        raise InvalidOptionError(f"{algo}: option {name} must be >= {low}, got {v}.")
    return v


def check_pow2_option(algo: str, name: str, value, low: int = 2) -> int:
    v = check_int_option(algo, name, value, low)
    if v & (v - 1):
        raise InvalidOptionError(
            f"{algo}: option {name} must be a power of two >= {low}, got {v} (e.g. {1 << (v.bit_length() - 1)})."
        )
    return v
