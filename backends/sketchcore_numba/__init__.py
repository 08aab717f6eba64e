"""sketchcore_numba: compiled CPU kernels for numpy arrays (the default backend for numpy input).

Overrides what dominates the sketches on a CPU:

* ``apply_op``: affd and afjl forward (Hadamard preconditioner) as fused kernels (``_ops``,
  ``_fused``): affd is one FWHT with the signs in its first sweep and its last level fused with
  the Gaussian diagonal, the in-factor permutations and the sum that ``R_D H`` reduces to; afjl
  computes only the D outputs it keeps. Other operators and directions take the generic path.
* ``fwht``: a depth-first, cache-oblivious Walsh-Hadamard transform of SIMD butterflies
  (``_fwht``), in place or out of place (``out=``), parallel over rows or inside a long row;
* ``hadamard``: the permuted Kronecker Hadamard ``M (diag * x)`` of AFFD/AFJL/FJL/FFD with the
  column gathers, the diagonal and the scaling fused into the loads of its base blocks and the
  row gathers as one pass (``_hadamard``);
* ``ell_matvec``: the sparse products of FJL as parallel loops instead of chunked gathers.

Everything else (Hartley via numpy's FFT, Kronecker matmuls via BLAS) is the reference.
Importing this module does not import numba; the first kernel call does (and JIT-compiles, once
per machine thanks to numba's on-disk cache).
"""

from __future__ import annotations

import sys

from sketchcore import Backend, hookimpl

__all__ = ["NumbaBackend"]

_FLOAT_CHARS = ("f", "d")  # float32, float64
_FUSED = ("affd", "afjl")


_KERNELS: dict = {}


def _kernel(name: str):
    """A function of ``._kernels`` (imported on first use: importing it compiles or loads the
    numba kernels, which ``import sketchcore_numba`` must not do)."""
    fn = _KERNELS.get(name)
    if fn is None:
        from . import _kernels

        fn = _KERNELS[name] = getattr(_kernels, name)
    return fn


def _numpy_float(x) -> bool:
    """A numpy float32/float64 array in native byte order (``dtype.char``, not ``dtype.name``:
    the latter is computed in Python and costs microseconds per call)."""
    np = sys.modules.get("numpy")
    if np is None or not isinstance(x, np.ndarray):
        return False
    dt = x.dtype
    return dt.char in _FLOAT_CHARS and dt.isnative


class NumbaBackend(Backend):
    """numba kernels on numpy arrays; arrays of other dtypes fall back to the reference."""

    name = "numba"
    array_module = "numpy"
    priority = 10
    description = (
        "numba-compiled parallel CPU kernels on numpy arrays (SIMD FWHT, fused affd/afjl)")
    compiled_host_kernels = True  # torch CPU tensors come here too (sketchcore_torch.host)

    def namespace(self):
        import array_api_compat.numpy as xp

        return xp

    def owns(self, x) -> bool:
        np = sys.modules.get("numpy")
        return np is not None and isinstance(x, (np.ndarray, np.generic))

    def check(self) -> str | None:
        try:
            import numba  # noqa: F401
        except Exception as err:  # noqa: BLE001 - any import failure is the reason
            return f"numba cannot be imported ({type(err).__name__}: {err}); pip install numba"
        return super().check()

    # ---- whole operators -------------------------------------------------------------------
    def apply_op(self, op, direction: str, x):
        """affd and afjl forward (Hadamard preconditioner) on numpy float arrays run as fused
        kernels (see ``_ops``); everything else takes the generic path."""
        if direction == "apply" and _numpy_float(x) and getattr(op, "name", None) in _FUSED:
            y = _kernel("fused_apply")(op, x)
            if y is not None:
                return y
        return super().apply_op(op, direction, x)

    def scratch_is_bounded(self, op, direction: str, x) -> bool:
        """The fused passes keep one row of scratch per worker, whatever the batch."""
        return (direction == "apply" and _numpy_float(x)
                and getattr(op, "name", None) in _FUSED and _kernel("fused_handles")(op, x))

    # ---- kernels --------------------------------------------------------------------------
    def fwht(self, x, /, *, out=None):
        """The FWHT of the last axis; ``out`` (same shape and dtype, C-contiguous; ``x`` itself
        for in place) saves allocating, and first touching, a new result array."""
        if not _numpy_float(x):
            if out is not None:
                raise ValueError(f"fwht(out=...) needs a float32/float64 numpy input, got "
                                 f"{type(x).__name__} of dtype {getattr(x, 'dtype', None)}.")
            return super().fwht(x)
        return _kernel("fwht")(x, out)

    def hadamard(self, x, plan, /, *, diag=None):
        if not _numpy_float(x):
            return super().hadamard(x, plan, diag=diag)
        from ._kernels import hadamard

        return hadamard(x, plan, diag)

    def ell_matvec(self, x, idx, vals, /):
        if not _numpy_float(x):
            return super().ell_matvec(x, idx, vals)
        from ._kernels import ell_matvec

        return ell_matvec(x, idx, vals)


@hookimpl
def sketchcore_register_backends(register):
    register(NumbaBackend())
