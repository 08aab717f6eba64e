"""One ``jax.jit`` program per (operator, direction), cached for the operator's lifetime.

``compiled(backend, op, direction)`` returns a jitted ``x -> op.<direction>(backend, x)``. jit
itself re-traces per input shape and dtype and composes with the caller's ``jit``, ``grad`` and
``vmap``. Programs are held in a ``WeakKeyDictionary`` keyed on the operator and the traced
function holds the operator only weakly, so dropping an operator frees its programs.

Parameters: the operator's ``ParamCache`` turns host parameters into jax arrays; inside a trace
it builds them without caching (a traced value has no device), so each compiled program captures
them as constants and no tracer outlives its trace.
"""

from __future__ import annotations

import weakref

import jax

__all__ = ["compiled"]

_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled(backend, op, direction: str):
    """The jitted ``op.<direction>`` for ``backend`` (built once per operator and direction)."""
    per_op = _PROGRAMS.get(op)
    if per_op is None:
        per_op = {}
        _PROGRAMS[op] = per_op
    fn = per_op.get(direction)
    if fn is None:
        fn = jax.jit(_traced(backend, weakref.ref(op), direction))
        per_op[direction] = fn
    return fn


def _traced(backend, op_ref, direction: str):
    def run(x):
        op = op_ref()
        if op is None:  # only reachable if a program outlives its operator
            raise RuntimeError("the sketch operator of this compiled program was garbage-collected")
        # parameters become constants of the program; ParamCache keeps nothing traced
        return getattr(op, direction)(backend, x)

    run.__name__ = f"sketch_{direction}"
    return run
