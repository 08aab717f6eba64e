"""``Backend``: an array namespace plus the kernels the sketches call.

The base class *is* the portable reference backend: every kernel method calls the pure array-API
implementation in ``sketchcore.kernels``. A backend plugin subclasses it and overrides only what it
accelerates (a numba or CUDA FWHT, the lookup-free Kronecker path for XLA, ...). The core calls
``backend.<kernel>(...)`` and never asks which backend it has.

Kernel contracts (checked by ``sketchcore.testing.check_backend``):

* ``fwht(x)``: unnormalized Walsh-Hadamard transform of the last axis in Sylvester order; the
  length is a power of two (the sketches pad); ``fwht(fwht(x)) == n * x``.
* ``hadamard(x, plan, diag=None)``: ``M (diag * x)`` for the Kronecker plan
  ``M = (P_1 H_1 P'_1) x ... x (P_K H_K P'_K)`` of normalized Hadamard factors (``KronPlan``).
* ``hartley(x, plan, diag=None)``: ``P T P' (diag * x)``, T the normalized discrete Hartley
  transform of the whole last axis and P, P' the plan's Kronecker permutations.
* ``kron_matmul(x, factors)``: ``(F_1 x ... x F_K) x`` for dense ``(D_i, B_i)`` factors.
* ``ell_matvec(x, idx, vals)``: ``y[..., r] = sum_s vals[r, s] x[..., idx[r, s]]``.

All kernels act on the last axis, broadcast over leading axes, return arrays of the input's
namespace, device and dtype, and never modify their inputs.
"""

from __future__ import annotations

import functools
from typing import ClassVar

from . import kernels
from ._deprecated import warn_renamed_name
from .array_namespace import device_of, from_host, namespace_of

__all__ = ["Backend", "DIRECTIONS", "map_direction"]

#: the two directions of ``Backend.apply_op``: ``Phi`` and ``Phi^T``, named after the
#: ``SketchAlgorithm`` (and ``Sketch``) methods that compute them
DIRECTIONS = ("apply", "transpose")
#: the old direction strings, kept one release
_OLD_DIRECTIONS = {"forward": "apply", "adjoint": "transpose"}


def map_direction(direction: str, stacklevel: int = 4) -> str:
    """``direction`` with an old string (``"forward"``/``"adjoint"``) replaced by its new one
    (``"apply"``/``"transpose"``), warning once per call; any other value is returned as is."""
    new = _OLD_DIRECTIONS.get(direction) if isinstance(direction, str) else None
    if new is None:
        return direction
    warn_renamed_name(f"the apply_op direction {direction!r}", repr(new), stacklevel=stacklevel)
    return new


def _mapping_old_directions(fn):
    """``fn(self, op, direction, x)`` that receives ``direction`` mapped by ``map_direction``."""

    @functools.wraps(fn)
    def method(self, op, direction, x):
        return fn(self, op, map_direction(direction, stacklevel=4), x)

    method._maps_old_directions = True
    return method


class Backend:
    """A provider of an array namespace and kernels. Subclass and override what you accelerate.

    Required in a subclass: ``name``, ``namespace()`` and ``owns()``; everything else has a
    working default. ``Backend(xp)`` wraps any array-API namespace with the reference kernels.
    """

    name: ClassVar[str] = "generic"
    #: top-level module of the arrays this backend owns (for reporting; never imported here)
    array_module: ClassVar[str | None] = None
    #: among backends owning the same arrays, the highest priority is picked for backend=None
    priority: ClassVar[int] = 0
    #: one line for ``sketchcore info``
    description: ClassVar[str] = "portable array-API reference kernels"
    #: import path of a module with ``owns_model(model) -> bool`` and
    #: ``make_adapter(model, loss_fn, **options)`` (per-example gradients and HVPs of this
    #: framework's models; see ``sketchcore.gradients``), or None
    gradients_module: ClassVar[str | None] = None
    #: True when ``fwht``/``hadamard``/``ell_matvec`` on numpy float arrays are compiled kernels
    #: faster than generic array ops: backends of other arrays that live in host memory (torch
    #: on CPU) may then hand this backend zero-copy numpy views of their buffers
    compiled_host_kernels: ClassVar[bool] = False

    def __init__(self, xp=None) -> None:
        self._xp = xp

    # ---- identity -------------------------------------------------------------------------
    def namespace(self):
        """The array-API namespace the kernels compute with (imported lazily by subclasses)."""
        if self._xp is None:
            raise NotImplementedError(f"backend {self.name!r} must override namespace().")
        return self._xp

    def owns(self, x) -> bool:
        """Whether ``x`` is an array of this backend's library. Asked once per array type on the
        hot path: must not import that library and must never raise (one that raises marks the
        backend faulty: reported, and skipped from then on)."""
        return False

    def check(self) -> str | None:
        """``None`` when the backend can run here, else the reason it cannot. Runs once; may
        import the library; an exception is reported as the reason the backend is not usable."""
        try:
            self.namespace()
        except Exception as err:  # noqa: BLE001 - report any failure as the reason
            return f"{type(err).__name__}: {err}"
        return None

    def is_traced(self, x) -> bool:
        """Whether ``x`` only exists inside a compiler or transform trace of this backend's library
        (a jax tracer, a tensor wrapped by ``torch.func``): nothing computed from it may be cached
        across calls (``ParamCache``). Backends whose library traces override this. Default: an
        array without a concrete device (array-api-compat cannot name one) counts as traced, so
        an unknown library's tracers are never cached."""
        return device_of(x) is None

    def asarray(self, x):
        """Convert a foreign array (any library) into this backend's namespace."""
        xp = self.namespace()
        try:
            return xp.from_dlpack(x)
        except Exception:  # noqa: BLE001 - fall back to a host round trip
            import numpy as np

            return from_host(xp, np.asarray(x))

    def __repr__(self) -> str:
        return f"<sketchcore backend {self.name!r}>"

    def __init_subclass__(cls, **kwargs) -> None:
        """A subclass's own ``apply_op`` / ``scratch_is_bounded`` get ``direction`` already
        mapped from the old strings (``"forward"``/``"adjoint"``, with a warning), so overrides
        compare only against ``DIRECTIONS``."""
        super().__init_subclass__(**kwargs)
        for name in ("apply_op", "scratch_is_bounded"):
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_maps_old_directions", False):
                setattr(cls, name, _mapping_old_directions(fn))

    # ---- operator application ---------------------------------------------------------------
    def apply_op(self, op, direction: str, x):
        """Run ``op.apply`` or ``op.transpose`` (``direction``: ``"apply"`` or ``"transpose"``)
        on ``x``. Backends with a compiler override this to compile the whole direction once per
        operator (jax.jit)."""
        return getattr(op, map_direction(direction))(self, x)

    def scratch_is_bounded(self, op, direction: str, x) -> bool:
        """True when ``apply_op(op, direction, x)`` keeps its scratch memory independent of the
        batch (e.g. a fused kernel with one row of scratch per worker): ``Sketch`` then hands it
        the whole batch instead of ``rows_per_call`` rows at a time (no concatenation of parts).
        The default, False, suits kernels whose temporaries grow with the batch."""
        map_direction(direction)
        return False

    # ---- kernels --------------------------------------------------------------------------
    def fwht(self, x, /):
        return kernels.fwht(self.namespace(), x)

    def hadamard(self, x, plan, /, *, diag=None):
        """Default: the butterfly path. Backends that dislike gathers use ``hadamard_lookup_free``."""
        return self.hadamard_butterfly(x, plan, diag=diag)

    def hadamard_butterfly(self, x, plan, /, *, diag=None):
        xp = self.namespace()
        if diag is not None:
            x = x * diag
        rows, cols = plan.takes(xp, x)
        x = kernels.take_factors(xp, x, plan.sizes, cols)
        x = self.fwht(x) * (1.0 / float(plan.n) ** 0.5)
        return kernels.take_factors(xp, x, plan.sizes, rows)

    def hadamard_lookup_free(self, x, plan, /, *, diag=None):
        xp = self.namespace()
        if diag is not None:
            x = x * diag
        return self.kron_matmul(x, plan.dense_factors(xp, x))

    def hartley(self, x, plan, /, *, diag=None):
        xp = self.namespace()
        if diag is not None:
            x = x * diag
        rows, cols = plan.takes(xp, x)
        x = kernels.take_factors(xp, x, plan.sizes, cols)
        x = kernels.hartley(xp, x)
        return kernels.take_factors(xp, x, plan.sizes, rows)

    def kron_matmul(self, x, factors, /):
        return kernels.kron_matmul(self.namespace(), x, factors)

    def ell_matvec(self, x, idx, vals, /):
        return kernels.ell_matvec(self.namespace(), x, idx, vals)


def generic_for(x) -> Backend:
    """The reference backend for ``x``'s namespace."""
    return Backend(namespace_of(x))
