"""sketchcore_numba: compiled CPU kernels for numpy arrays (the default backend for numpy input).

Overrides the kernels that dominate the sketches on a CPU:

* ``fwht``: a cache-blocked, parallel Walsh-Hadamard transform with explicit SIMD butterflies,
  a few passes over memory whatever the length (see ``_schedule``);
* ``hadamard``: the permuted Kronecker Hadamard ``M (diag * x)`` of AFFD/AFJL/FJL/FFD with the
  diagonal, the column gathers and the scaling fused into its first pass and the row gathers into
  each pass's write-back, so the input is read once and the output written once per pass;
* ``ell_matvec``: the sparse products of FJL as parallel loops instead of chunked gathers.

Everything else (Hartley via numpy's FFT, Kronecker matmuls via BLAS) is the reference.
Importing this module does not import numba; the first kernel call does (and JIT-compiles, once
per machine thanks to numba's on-disk cache).
"""

from __future__ import annotations

import sys

from sketchcore import Backend, hookimpl

__all__ = ["NumbaBackend"]

_FLOATS = ("float32", "float64")


def _numpy_float(x) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray) and x.dtype.name in _FLOATS


class NumbaBackend(Backend):
    """numba kernels on numpy arrays; arrays of other dtypes fall back to the reference."""

    name = "numba"
    array_module = "numpy"
    priority = 10
    description = "numba-compiled parallel CPU kernels on numpy arrays (fused Hadamard, FWHT)"
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

    # ---- kernels --------------------------------------------------------------------------
    def fwht(self, x, /):
        if not _numpy_float(x):
            return super().fwht(x)
        from ._kernels import fwht

        return fwht(x)

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
