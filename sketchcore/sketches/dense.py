"""The dense Gaussian baseline ``Phi = G / sqrt(D)``, regenerated in blocks, never stored.

``G`` (D x N) is cut into blocks of input coordinates; block ``b`` is a pure function of
``(seed, "dense", b)``, generated on the host when needed and dropped after use, so memory stays at
one block (at most 2^22 numbers) whatever N and D are. This is TRAK's memory model, and the
accuracy reference the structured sketches are measured against. It costs O(N D) per vector.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _random as rnd
from ..array_namespace import device_of, from_host
from .base import SketchAlgorithm

__all__ = ["Dense"]

_BLOCK_ELEMENTS = 1 << 22
MAX_DENSE_OUT = 1 << 24


class Dense(SketchAlgorithm):
    name = "dense"
    summary = "G x / sqrt(D), G Gaussian regenerated in blocks from the seed (TRAK's baseline)"
    default_options = {}

    def max_out_dim(self) -> int:
        return MAX_DENSE_OUT

    def out_dim_error(self, limit: int) -> str:
        return (
            f"out_dim={self.out_dim} is larger than algo='dense' allows (at most {limit} = 2**24: "
            "each regenerated block of G holds at least one full row of out_dim Gaussians); "
            f"lower out_dim to at most {limit}, or use a structured sketch (algo='affd' or 'qk', "
            "up to the padded in_dim) for a larger one."
        )

    #: rows of the first block hashed by ``identity_samples`` (about 4096 numbers)
    _SAMPLE_ELEMENTS = 1 << 12

    def identity_samples(self) -> dict:
        """Dense keeps no parameters, so its identity digest covers a fixed sample of the
        matrix it regenerates: the first rows of the first block and the last row of the last
        block (the numbers as used, float32 and scaled). A change in numpy's Gaussian stream or
        in the block keying changes them."""
        first = self.block(0)
        k = max(1, min(first.shape[0], self._SAMPLE_ELEMENTS // self.out_dim))
        return {"first_rows": first[:k], "last_row": self.block(self.blocks - 1)[-1:]}

    def rows_per_call(self):
        """All rows at once: every call regenerates G, so splitting the batch would multiply
        the cost; the scratch is one block of G, independent of the batch."""
        return None

    def _build(self) -> None:
        self.rows = max(1, _BLOCK_ELEMENTS // self.out_dim)  # input coordinates per block
        self.blocks = -(-self.in_dim // self.rows)
        # math.sqrt is correctly rounded everywhere; float ** 0.5 calls the C library's pow(),
        # which is not, and differs between C libraries and CPUs (glibc's FMA and SSE2 variants)
        self.s = 1.0 / math.sqrt(self.out_dim)

    def block(self, b: int) -> np.ndarray:
        """Rows ``b*rows ...`` of ``G^T / sqrt(D)`` as float32, shape ``(rows_b, D)``."""
        r0 = b * self.rows
        r1 = min(self.in_dim, r0 + self.rows)
        g = rnd.rng(self.seed, "dense", b).standard_normal((r1 - r0, self.out_dim), dtype=np.float32)
        return g * np.float32(self.s)

    def _gt(self, xp, like, b):
        return from_host(xp, self.block(b), device=device_of(like), dtype=like.dtype)

    def apply(self, be, x):
        xp = be.namespace()
        y = None
        for b in range(self.blocks):
            r0 = b * self.rows
            r1 = min(self.in_dim, r0 + self.rows)
            part = xp.matmul(x[..., r0:r1], self._gt(xp, x, b))
            y = part if y is None else y + part
        return y

    def transpose(self, be, y):
        xp = be.namespace()
        parts = [xp.matmul(y, xp.matrix_transpose(self._gt(xp, y, b))) for b in range(self.blocks)]
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=-1)
