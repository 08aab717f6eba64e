"""The public entry points: ``Sketch`` (a reusable operator), ``sketch`` (one call), and the
listings ``algorithms()``, ``backends()``, ``analyses()``."""

from __future__ import annotations

import operator
from collections import OrderedDict

from . import _random
from ._errors import InvalidOptionError, ShapeError, unknown
from ._namespace import default_float
from .backend import Backend
from .registry import BackendInfo, registry

__all__ = ["Sketch", "sketch", "algorithms", "backends", "analyses", "resolve_backend"]


def _size(name: str, value) -> int:
    if isinstance(value, bool) or value is None:
        raise InvalidOptionError(f"{name} must be a positive integer, got {value!r}.")
    try:
        v = operator.index(value)
    except TypeError:
        raise InvalidOptionError(
            f"{name} must be a positive integer, got {value!r} ({type(value).__name__}); "
            f"pass e.g. {name}={int(value) if isinstance(value, float) and value > 0 else 1024}."
        ) from None
    if v < 1:
        raise InvalidOptionError(f"{name} must be >= 1, got {v}.")
    return v


def resolve_backend(backend, x) -> Backend:
    """The backend that applies a sketch to ``x``: a name, a ``Backend`` instance or class, or
    ``None`` for the library ``x`` belongs to (the best usable backend registered for it)."""
    if backend is None:
        return registry().backend_for(x)
    if isinstance(backend, str):
        return registry().backend(backend)
    if isinstance(backend, type) and issubclass(backend, Backend):
        return backend()
    if isinstance(backend, Backend):
        return backend
    raise InvalidOptionError(
        f"backend must be None, a backend name, or a sketchcore.Backend, got {backend!r}; "
        f"names: {sorted(registry().backends)}."
    )


class Sketch:
    """A seeded random linear map ``Phi: R^in_dim -> R^out_dim`` and its transpose.

    ``Sketch(algo="affd", in_dim=N, out_dim=D, seed=0)`` builds the host parameters once;
    ``op(x)`` / ``op.apply(x)`` maps ``(..., N) -> (..., D)`` and ``op.transpose(y)`` maps
    ``(..., D) -> (..., N)``, in the array library of the input. The same arguments give the same
    map on every backend. Algorithm options (``preconditioner``, ``max_block``, QK factor shapes,
    ``nnz_per_row``) are keyword arguments; ``sketchcore.algorithms()`` lists the algorithms.

    Inputs: float32/float64 compute in their dtype; float16/bfloat16 compute and return float32;
    integer and bool inputs are cast to the library's default float dtype; NaN and Inf are not
    checked (that would need a data-dependent reduction) and propagate into every output
    coordinate that depends on them.
    """

    def __init__(self, *, algo: str, in_dim: int, out_dim: int, seed: int, backend=None, **options):
        table = registry().algorithms
        if algo not in table:
            raise unknown("algorithm", algo, table, "See sketchcore.algorithms().")
        self.algo = algo
        self.in_dim = _size("in_dim", in_dim)
        self.out_dim = _size("out_dim", out_dim)
        self.seed = _random.check_seed(seed)
        self.backend = backend
        self.impl = table[algo](self.in_dim, self.out_dim, self.seed, **options)

    @property
    def options(self) -> dict:
        """The resolved options (defaults and automatic choices filled in)."""
        return dict(self.impl.opts)

    def describe(self) -> dict:
        """A plain dict that identifies the map (equal dicts: equal maps)."""
        return self.impl.describe()

    @property
    def nbytes(self) -> int:
        """Bytes of host parameters this operator keeps (the dense baseline keeps none)."""
        return self.impl.params.nbytes()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()))
        return (f"Sketch(algo={self.algo!r}, in_dim={self.in_dim}, out_dim={self.out_dim}, "
                f"seed={self.seed}{', ' + opts if opts else ''})")

    def _prepare(self, x, backend, expected: int, what: str):
        be = resolve_backend(backend if backend is not None else self.backend, x)
        if not be.owns(x) and (backend is not None or self.backend is not None):
            x = be.asarray(x)
        xp = be.namespace()
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) == 0:
            raise ShapeError(f"{what} needs an array with a last axis of size {expected}, got {x!r}.")
        if shape[-1] != expected:
            raise ShapeError(
                f"{what} expects the last axis to have size {expected}, got shape {tuple(shape)}; "
                f"this operator maps {self.in_dim} -> {self.out_dim}."
            )
        dtype = x.dtype
        if xp.isdtype(dtype, "complex floating"):
            raise InvalidOptionError(f"{what}: complex input ({dtype}) is not supported; sketch the "
                                     "real and imaginary parts separately.")
        if not xp.isdtype(dtype, "real floating"):
            x = xp.astype(x, default_float(xp))
        elif dtype != xp.float32 and dtype != xp.float64:
            x = xp.astype(x, xp.float32)
        return be, x

    def _run(self, be, direction: str, x, out_dim: int):
        """Apply one direction, a bounded number of rows at a time when the batch is large, so
        the kernels' scratch memory stays O(chunk) instead of O(batch x N) (rows are
        independent, so the result is the same)."""
        rows = self.impl.rows_per_call()
        batch = x.shape[:-1]
        n_rows = 1
        for b in batch:
            n_rows *= b
        if rows is None or n_rows <= rows:
            return be.apply_op(self.impl, direction, x)
        xp = be.namespace()
        flat = xp.reshape(x, (n_rows, x.shape[-1]))
        parts = [be.apply_op(self.impl, direction, flat[r : r + rows, ...])
                 for r in range(0, n_rows, rows)]
        return xp.reshape(xp.concat(parts, axis=0), (*batch, out_dim))

    def apply(self, x, *, backend=None):
        """``Phi x`` for ``x`` of shape ``(..., in_dim)``: returns ``(..., out_dim)``."""
        be, x = self._prepare(x, backend, self.in_dim, "Sketch.apply")
        return self._run(be, "forward", x, self.out_dim)

    __call__ = apply

    def transpose(self, y, *, backend=None):
        """``Phi^T y`` for ``y`` of shape ``(..., out_dim)``: returns ``(..., in_dim)``."""
        be, y = self._prepare(y, backend, self.out_dim, "Sketch.transpose")
        return self._run(be, "adjoint", y, self.in_dim)


_OPS: OrderedDict = OrderedDict()
_OPS_MAX = 8


def _cached_sketch(algo, in_dim, out_dim, seed, options) -> Sketch:
    try:
        key = (algo, in_dim, out_dim, seed, tuple(sorted(options.items())))
        hash(key)
    except TypeError:
        return Sketch(algo=algo, in_dim=in_dim, out_dim=out_dim, seed=seed, **options)
    op = _OPS.get(key)
    if op is None:
        op = Sketch(algo=algo, in_dim=in_dim, out_dim=out_dim, seed=seed, **options)
        _OPS[key] = op
        if len(_OPS) > _OPS_MAX:
            _OPS.popitem(last=False)
    else:
        _OPS.move_to_end(key)
    return op


def sketch(x, *, algo: str, out_dim: int, seed: int, backend=None, **options):
    """``Sketch(algo=algo, in_dim=x.shape[-1], out_dim=out_dim, seed=seed, **options)(x)``.

    Operators are cached (the last 8), so calling this in a loop does not rebuild them.
    """
    shape = getattr(x, "shape", None)
    if not shape:
        raise ShapeError(f"sketch() needs an array of shape (..., N), got {x!r}.")
    op = _cached_sketch(algo, shape[-1], out_dim, seed, options)
    return op.apply(x, backend=backend)


def algorithms() -> list[str]:
    """Names of the sketches that can be built."""
    return sorted(registry().algorithms)


def backends() -> list[BackendInfo]:
    """Discovered backends (and plugins that failed to load), with whether each runs here."""
    return registry().info()


def analyses() -> dict:
    """Discovered analysis plugins, name -> ``Analysis``."""
    return dict(sorted(registry().analyses.items()))
