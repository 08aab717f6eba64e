"""``JaxBackend``: jax arrays on any XLA device, each sketch direction compiled once with jit.

Importing this module does not import jax. ``apply_op`` runs a whole direction as one cached
``jax.jit`` program (see ``compile.py``); the Hadamard and Kronecker kernels are the lookup-free
einsums of ``kron.py``, so the programs contain no gathers for affd/afjl/qk with the Hadamard or
Q preconditioners. The FFT preconditioner (``hartley``) and FJL's sparse product keep the
reference gathers, with host index arrays as constants.
"""

from __future__ import annotations

import sys
import weakref

from sketchcore import Backend

__all__ = ["JaxBackend"]

_TAKES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plan_takes(plan):
    """A plan's in-factor gathers as host int32 arrays (never tracers), cached per plan."""
    import numpy as np

    takes = _TAKES.get(plan)
    if takes is None:
        def conv(perms):
            return [None if p is None else np.asarray(p, dtype=np.int32) for p in perms]

        takes = (conv(plan.row_perm), conv(plan.col_perm))
        _TAKES[plan] = takes
    return takes


class JaxBackend(Backend):
    """Kernels for ``jax.Array``: jit per operator, lookup-free Kronecker einsums."""

    name = "jax"
    array_module = "jax"
    priority = 10
    description = "jax arrays (CPU/GPU/TPU via XLA): jit per operator, lookup-free Kronecker einsums"
    gradients_module = "sketchcore_jax.gradients"

    def namespace(self):
        import jax.numpy as jnp

        return jnp

    def owns(self, x) -> bool:
        jax = sys.modules.get("jax")
        return jax is not None and isinstance(x, jax.Array)

    def is_traced(self, x) -> bool:
        """A tracer of ``jax.jit``/``grad``/``vmap`` (jax arrays are tracers inside a transform)."""
        return isinstance(x, sys.modules["jax"].core.Tracer) or super().is_traced(x)

    def asarray(self, x):
        import jax.numpy as jnp
        import numpy as np

        if self.owns(x):
            return x
        try:
            return jnp.from_dlpack(x)
        except Exception:  # noqa: BLE001 - e.g. a read-only or non-DLPack array: go via the host
            return jnp.asarray(np.asarray(x))

    # ---- operator application ---------------------------------------------------------------
    def scratch_is_bounded(self, op, direction: str, x) -> bool:
        from .host import fused_input

        return fused_input(op, direction, x) is not None

    def apply_op(self, op, direction: str, x):
        from .host import host_apply  # concrete CPU arrays of fused sketches: numba kernels

        y = host_apply(op, direction, x)
        if y is not None:
            return y
        if op.params.nbytes() == 0:
            # An operator that keeps no parameters (the dense baseline) regenerates them on the
            # host block by block; compiling would bake every block into the program.
            return getattr(op, direction)(self, x)
        from .compile import compiled

        return compiled(self, op, direction)(x)

    # ---- kernels --------------------------------------------------------------------------
    def fwht(self, x, /):
        from .kron import fwht_einsum

        return fwht_einsum(x)

    def hadamard(self, x, plan, /, *, diag=None):
        from .kron import plan_hadamard

        return plan_hadamard(x, plan, diag)

    def kron_matmul(self, x, factors, /):
        from .kron import kron_einsum

        return kron_einsum(x, factors)

    def hartley(self, x, plan, /, *, diag=None):
        import jax.numpy as jnp

        from sketchcore.kernels import hartley, take_factors

        if diag is not None:
            x = x * diag
        rows, cols = _plan_takes(plan)
        x = take_factors(jnp, x, plan.sizes, cols)
        return take_factors(jnp, hartley(jnp, x), plan.sizes, rows)
