"""jax CPU arrays through the compiled host kernels of the numpy backend (numba), outside jit.

On a CPU, XLA compiles the lookup-free Kronecker einsums of ``kron.py`` into one program per
operator, but it does not fuse a long Walsh-Hadamard transform into cache-blocked passes, which
the numba backend's affd/afjl forward kernels do (the two side by side: docs/results.md, section
1c). So a *concrete* CPU ``jax.Array`` (float32/float64, not a tracer) of an operator the host
kernels fuse is viewed as a read-only numpy array (zero-copy on the CPU), sketched there, and the
(small) result is put back on the device.

Inside ``jax.jit``, ``grad`` or ``vmap`` the input is a tracer and nothing changes: the jitted
XLA program runs, differentiable and portable to GPU/TPU. ``host_callback(op)`` wraps the same
host kernel in ``jax.pure_callback`` for jit users who want it anyway: it works under ``jit`` and
``vmap`` but has no derivative, runs on the host even inside a GPU program, and is slower than
the direct call outside jit (the callback machinery copies and synchronizes).
``SKETCHCORE_JAX_HOST_KERNELS=0`` turns the host path off.
"""

from __future__ import annotations

import os

import numpy as np

from sketchcore.backend import map_direction

__all__ = ["enabled", "host_backend", "fused_input", "host_apply", "host_callback"]

#: the operators whose host forward is a fused kernel (others gain nothing over XLA's program)
_FUSED = ("affd", "afjl")
_PROBE = np.empty(0, dtype=np.float32)


def enabled() -> bool:
    """Whether concrete CPU arrays may use the host kernels (``SKETCHCORE_JAX_HOST_KERNELS=0``
    stops it)."""
    return os.environ.get("SKETCHCORE_JAX_HOST_KERNELS", "1") != "0"


def host_backend():
    """The backend serving numpy arrays if its kernels are compiled (numba), else None."""
    from sketchcore.registry import registry

    be = registry().backend_for(_PROBE)
    return be if getattr(be, "compiled_host_kernels", False) else None


def _fused(op, direction: str) -> bool:
    return (direction == "apply" and getattr(op, "name", None) in _FUSED
            and getattr(op, "options", {}).get("preconditioner") == "hadamard")


def fused_input(op, direction: str, x):
    """(host backend, zero-copy numpy view of ``x``) when the host kernels run ``op``'s
    ``direction`` on ``x`` as one fused pass, else None (traced or non-CPU input, other dtypes
    or operators, disabled)."""
    if not enabled() or not _fused(op, direction):
        return None
    import jax

    if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
        return None
    if x.dtype not in (np.float32, np.float64) or x.size == 0:
        return None
    try:
        if any(d.platform != "cpu" for d in x.devices()):
            return None
    except Exception:  # noqa: BLE001 - a deleted or exotic array: leave it to XLA
        return None
    be = host_backend()
    if be is None:
        return None
    xn = np.asarray(x)
    return (be, xn) if be.scratch_is_bounded(op, direction, xn) else None


def host_apply(op, direction: str, x):
    """``op.<direction>`` of a concrete CPU ``jax.Array`` on the host kernels, or None when
    ``fused_input`` refuses it."""
    found = fused_input(op, direction, x)
    if found is None:
        return None
    import jax

    be, xn = found
    return jax.device_put(be.apply_op(op, direction, xn), next(iter(x.devices())))


def host_callback(op, direction: str = "apply"):
    """``x -> op.<direction>(x)`` (``op`` a ``Sketch``) as a ``jax.pure_callback`` into the host
    kernels: usable under ``jax.jit`` and ``jax.vmap`` (rows are independent), not
    differentiable; ``x`` must already be float32/float64 with the operator's last axis."""
    import jax

    be = host_backend()
    if be is None:
        raise RuntimeError("host_callback needs the numba backend (pip install numba).")
    algorithm = getattr(op, "algorithm", op)  # a Sketch or its algorithm
    direction = map_direction(direction)  # "apply" or "transpose" (old: "forward"/"adjoint")
    out_dim = algorithm.out_dim if direction == "apply" else algorithm.in_dim

    def run(a):
        return np.asarray(be.apply_op(algorithm, direction, np.asarray(a)))

    def call(x):
        shape = jax.ShapeDtypeStruct((*x.shape[:-1], out_dim), x.dtype)
        return jax.pure_callback(run, shape, x, vmap_method="broadcast_all")

    return call
