"""A complete third-party sketchcore backend in one module.

``ExampleBackend`` computes with numpy (through ``array_api_compat.numpy``) and overrides one
kernel, the Walsh-Hadamard transform, with a matmul hybrid: ``H_n`` is the Kronecker product of
small Sylvester blocks ``H_b`` (``b <= 64``), so the transform is a few batched matrix products
instead of ``log2(n)`` butterfly passes. Every other kernel is inherited from
``sketchcore.Backend``, the portable reference. ``priority = -1`` keeps numpy's own backend the
default for numpy arrays: this one runs when asked for by name, ``backend="example"``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

import sketchcore

__all__ = ["ExampleBackend"]

BLOCK = 64  # the largest dense Hadamard block


@lru_cache(maxsize=32)
def _sylvester(b: int, dtype: str) -> np.ndarray:
    """The unnormalized ``b x b`` Sylvester Hadamard matrix (b a power of two)."""
    h = np.ones((1, 1), dtype=dtype)
    while h.shape[0] < b:
        h = np.block([[h, h], [h, -h]])
    h.setflags(write=False)
    return h


class ExampleBackend(sketchcore.Backend):
    name = "example"
    array_module = "numpy"
    priority = -1
    description = "example third-party backend: numpy with a blocked-matmul FWHT"

    def namespace(self):
        import array_api_compat.numpy as xp

        return xp

    def owns(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def fwht(self, x, /):
        """Unnormalized FWHT of the last axis: contract each block of ``log2(b)`` index bits
        with ``H_b``, lowest bits first (``H_n = H_b1 x H_b2 x ...``, in any order)."""
        n = x.shape[-1]
        if n < 1 or n & (n - 1):
            raise ValueError(f"fwht needs a power-of-two length on the last axis, got {n}.")
        batch = x.shape[:-1]
        rows = int(np.prod(batch, dtype=np.int64))
        y = np.asarray(x).reshape(rows, n)
        if n == 1:
            return y.reshape(*batch, n).copy()  # never hand back a view of the input
        rest, done = n, 1
        while rest > 1:
            b = min(BLOCK, rest)
            rest //= b
            y = np.matmul(_sylvester(b, y.dtype.name), y.reshape(rows, rest, b, done))
            done *= b
        return y.reshape(*batch, n)


@sketchcore.hookimpl
def sketchcore_register_backends(register):
    register(ExampleBackend())
