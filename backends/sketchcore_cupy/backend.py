"""``CupyBackend``: cupy arrays on CUDA devices, with fused Walsh-Hadamard kernels.

Importing this module does not import cupy. ``fwht`` and ``hadamard`` run the kernels of
``_fwht_kernel`` (diagonal, scaling and the plan's in-factor permutations fused into the loads and
stores); a plan whose permuted factors cannot be cut at a tile boundary takes the butterfly path
(cupy gathers around the same fused FWHT). Everything else is the array-API reference on
``array_api_compat.cupy``.
"""

from __future__ import annotations

import math
import sys
import weakref

from sketchcore import Backend

from ._fwht_kernel import TILE_LOG2
from ._layout import schedule_for

__all__ = ["CupyBackend"]

_FUSED_DTYPES = ("float32", "float64")


class CupyBackend(Backend):
    """Kernels for ``cupy.ndarray``: a shared-memory tiled FWHT with fused gathers (float32 and
    float64); the reference kernels on ``array_api_compat.cupy`` for everything else."""

    name = "cupy"
    array_module = "cupy"
    priority = 10
    description = "CUDA via cupy: fused shared-memory Walsh-Hadamard kernels (NVRTC)"

    def __init__(self) -> None:
        super().__init__()
        self._plain: dict[tuple, object] = {}  # (n, dtype, device) -> DeviceSchedule
        self._plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def namespace(self):
        import array_api_compat.cupy as xp

        return xp

    def owns(self, x) -> bool:
        cp = sys.modules.get("cupy")
        return cp is not None and isinstance(x, cp.ndarray)

    def check(self) -> str | None:
        try:
            import cupy
        except Exception as err:  # noqa: BLE001 - any import failure is the reason
            return (f"cupy is not importable ({type(err).__name__}: {err}); "
                    "install it with `pip install sketchcore[cupy]`")
        try:
            available = cupy.cuda.is_available()
        except Exception as err:  # noqa: BLE001
            return f"no CUDA device ({type(err).__name__}: {err})"
        if not available:
            return "no CUDA device (cupy.cuda.is_available() is False)"
        try:
            import array_api_compat.cupy  # noqa: F401
        except Exception as err:  # noqa: BLE001
            return f"array_api_compat.cupy is not importable ({type(err).__name__}: {err})"
        try:
            from ._launch import kernels

            device = cupy.cuda.Device().id
            for dtype in _FUSED_DTYPES:
                kernels(dtype, device)
        except Exception as err:  # noqa: BLE001 - NVRTC missing or the compile failed
            return (f"cannot compile the CUDA FWHT kernels ({type(err).__name__}: {err}); "
                    "NVRTC is needed at run time: `pip install cupy-cuda12x[ctk]` or install "
                    "the CUDA toolkit")
        return None

    # ---- kernels --------------------------------------------------------------------------
    def fwht(self, x, /):
        if not self._fusable(x):
            return super().fwht(x)
        n = int(x.shape[-1])
        if n < 1 or n & (n - 1):
            raise ValueError(
                f"the Walsh-Hadamard transform needs a power-of-two length on the last axis, got "
                f"{n}; the sketches pad automatically (sketchcore.kernels.pad_last pads by hand)."
            )
        key = (n, x.dtype.name, x.device.id)
        sched = self._plain.get(key)
        if sched is None:
            from ._launch import to_device

            with x.device:
                sched = to_device(schedule_for((n,), (None,), (None,), TILE_LOG2[x.dtype.name]))
            self._plain[key] = sched
        return self._run(x, sched, None, 1.0)

    def hadamard(self, x, plan, /, *, diag=None):
        if not self._fusable(x) or plan.n != x.shape[-1]:
            return super().hadamard(x, plan, diag=diag)
        n = plan.n
        if diag is not None and not (
            self.owns(diag) and tuple(diag.shape) == (n,) and diag.dtype == x.dtype
        ):
            x = x * diag  # a broadcast or foreign diagonal: apply it here, fuse nothing
            diag = None
        sched = self._plan_schedule(plan, x)
        if sched is None:  # permuted factors straddle every usable cut
            return self.hadamard_butterfly(x, plan, diag=diag)
        return self._run(x, sched, diag, 1.0 / math.sqrt(n))

    def hartley(self, x, plan, /, *, diag=None):
        if self.owns(x) and x.size == 0:  # cuFFT plans reject empty batches
            import cupy

            return cupy.zeros(x.shape, dtype=x.dtype)
        return super().hartley(x, plan, diag=diag)

    # ---- helpers ----------------------------------------------------------------------------
    def _fusable(self, x) -> bool:
        return self.owns(x) and x.ndim >= 1 and x.dtype.name in _FUSED_DTYPES

    def _plan_schedule(self, plan, x):
        """The plan's schedule on ``x``'s device for ``x``'s tile size (None: unfused path)."""
        per_plan = self._plans.setdefault(plan, {})
        key = (TILE_LOG2[x.dtype.name], x.device.id)
        if key not in per_plan:
            from ._launch import to_device

            host = schedule_for(plan.sizes, plan.row_perm, plan.col_perm, key[0])
            with x.device:
                per_plan[key] = None if host is None else to_device(host)
        return per_plan[key]

    def _run(self, x, sched, diag, scale: float):
        import cupy

        from ._launch import run_schedule

        shape = tuple(x.shape)
        n = shape[-1]
        rows = math.prod(shape[:-1])
        with x.device:
            if rows == 0:
                return cupy.empty(shape, dtype=x.dtype)
            x2 = _aligned(cupy, x.reshape(rows, n))
            if diag is not None:
                diag = _aligned(cupy, diag)
            out = run_schedule(x2, sched, diag, scale)
        return out.reshape(shape)


def _aligned(cupy, a):
    """``a`` C-contiguous and 16-byte aligned (the kernels load 16-byte vectors)."""
    a = cupy.ascontiguousarray(a)
    if a.data.ptr % 16:
        a = a.copy()
    return a
