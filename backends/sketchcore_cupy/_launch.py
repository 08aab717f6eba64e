"""Compiling the CUDA FWHT module (once per dtype and device) and launching a schedule on it."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ._fwht_kernel import KERNEL_NAMES, LOG_THREADS, RADIX_THREADS, TILE_LOG2, source
from ._layout import FusedSchedule

__all__ = ["kernels", "DeviceSchedule", "to_device", "run_schedule"]

_MODULES: dict[tuple[str, int], dict] = {}
_LOCK = threading.Lock()


def kernels(dtype: str, device_id: int) -> dict:
    """The compiled kernels for ``dtype`` on device ``device_id`` (NVRTC runs on first use)."""
    key = (dtype, device_id)
    fns = _MODULES.get(key)
    if fns is None:
        import cupy

        with _LOCK, cupy.cuda.Device(device_id):
            fns = _MODULES.get(key)
            if fns is None:
                module = cupy.RawModule(code=source(dtype), options=("--std=c++14",))
                fns = {name: module.get_function(name) for name in KERNEL_NAMES}
                _MODULES[key] = fns
    return fns


@dataclass(frozen=True)
class DeviceSchedule:
    """A ``FusedSchedule`` with its index arrays on one device (None stays None)."""

    host: FusedSchedule
    src_seg: object
    inv_col: object
    row_lo: object
    inv_row_hi: object


def to_device(schedule: FusedSchedule) -> DeviceSchedule:
    """Copy a schedule's index arrays to the current device."""
    import cupy

    def dev(a):
        return None if a is None else cupy.asarray(a)

    return DeviceSchedule(schedule, dev(schedule.src_seg), dev(schedule.inv_col),
                          dev(schedule.row_lo), dev(schedule.inv_row_hi))


def run_schedule(x2, sched: DeviceSchedule, diag, scale: float, *, launch=None):
    """The transform of the rows of ``x2`` ((rows, n), contiguous, 16-byte aligned, float32 or
    float64, on the current device) in a new array; ``diag`` is None or (n,) like ``x2``.

    ``launch`` maps kernel names to callables ``(grid, block, args)``; by default the compiled
    kernels for ``x2``'s dtype and device (the tests pass host emulations of them)."""
    import array_api_compat
    import numpy as np

    xp = array_api_compat.array_namespace(x2)
    dtype = x2.dtype.name
    fns = kernels(dtype, x2.device.id) if launch is None else launch
    scalar = np.float32 if dtype == "float32" else np.float64
    log_vw = 2 if dtype == "float32" else 1  # 16-byte vectors
    rows, n = x2.shape
    total = rows * n
    host = sched.host
    log_t = TILE_LOG2[dtype]
    out = xp.empty_like(x2)
    fns["fwht_tile"](
        ((total + (1 << log_t) - 1) >> log_t,), (1 << LOG_THREADS,),
        (x2, out, diag, sched.src_seg, sched.inv_col, sched.row_lo, np.int64(total),
         np.int32(host.log_n), np.int32(host.log_seg), scalar(scale)),
    )
    for i, (log_h, log_r) in enumerate(host.radix):
        last = i == len(host.radix) - 1
        perm = sched.inv_row_hi if last else None
        dst = out if perm is None else xp.empty_like(out)  # a scatter cannot run in place
        items = total >> (log_r + log_vw)
        fns[f"fwht_radix{1 << log_r}"](
            ((items + RADIX_THREADS - 1) // RADIX_THREADS,), (RADIX_THREADS,),
            (out, dst, perm, np.int64(items), np.int32(host.log_n), np.int32(log_h),
             np.int32(host.log_seg)),
        )
        out = dst
    return out
