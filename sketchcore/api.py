"""The public entry points: ``Sketch`` (a reusable operator), ``sketch`` (one call), and the
listings ``algorithms()``, ``backends()``, ``analyses()``."""

from __future__ import annotations

import sys
import warnings
from collections import OrderedDict

from . import _random
from ._deprecated import warn_renamed_name
from ._errors import InvalidOptionError, ShapeError, describe_value
from .array_namespace import default_float
from ._validate import check_algo as _algo
from ._validate import check_size as _size
from .auto_dim import resolve_auto
from .backend import Backend
from .registry import BackendInfo, registry

__all__ = ["Sketch", "sketch", "algorithms", "backends", "analyses", "resolve_backend"]


def _out_dim(algo: str, in_dim: int, out_dim, options: dict) -> int:
    """A validated ``out_dim``: a positive integer, or ``"auto"`` (``sketchcore.auto_dim``'s rule,
    logged once at INFO on the ``sketchcore`` logger)."""
    if isinstance(out_dim, str):
        if out_dim == "auto":
            return resolve_auto(algo, in_dim, options)
        raise InvalidOptionError(
            f"out_dim must be a positive integer or 'auto', got {describe_value(out_dim)}; pass "
            "e.g. out_dim=1024, or out_dim='auto' (see sketchcore.auto_out_dim).")
    return _size("out_dim", out_dim)


#: backends already warned that they turned float64 input into float32
_WARNED_FLOAT32: set = set()


def _warn_float32(be: Backend, before, after) -> None:
    """Warn once per backend when converting a float64 input into it gave float32 (jax with
    64-bit floats off): the sketch is then computed and returned in float32."""
    if be.name in _WARNED_FLOAT32 or not str(before).endswith("float64"):
        return
    if str(getattr(after, "dtype", "")).endswith("float64"):
        return
    _WARNED_FLOAT32.add(be.name)
    frame, level = sys._getframe(0), 1  # point the warning at the first caller outside this file
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(
        f"backend {be.name!r} turned float64 input into {getattr(after, 'dtype', '?')}: the "
        "sketch is computed and returned in float32 (jax computes in float32 unless 64-bit "
        "floats are enabled: jax.config.update('jax_enable_x64', True) at startup). Shown once "
        "per backend.", UserWarning, stacklevel=level)


def _option_key(value):
    """A cache key for an option value that keeps its type, so ``max_block=8.0`` (refused) or
    ``True`` never finds the operator built for ``max_block=8``; containers are keyed item by
    item. Raises TypeError for values that cannot be keyed (those operators are not cached)."""
    kind = (type(value).__module__, type(value).__qualname__)
    if isinstance(value, (tuple, list)):
        return kind, tuple(_option_key(v) for v in value)
    hash(value)
    return kind, value


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
        f"backend must be None, a backend name, or a sketchcore.Backend, got "
        f"{describe_value(backend)}; "
        f"names: {sorted(registry().backends)}."
    )


class Sketch:
    """A seeded random linear map ``Phi: R^in_dim -> R^out_dim`` and its transpose.

    ``Sketch(algo="affd", in_dim=N, out_dim=D, seed=0)`` builds the host parameters once;
    ``op(x)`` / ``op.apply(x)`` maps ``(..., N) -> (..., D)`` and ``op.transpose(y)`` maps
    ``(..., D) -> (..., N)``, in the array library of the input. The same arguments give the same
    map on every backend. Algorithm options (``preconditioner``, ``max_block``, QK factor shapes,
    ``nnz_per_row``, ``nnz_per_col``) are keyword arguments; ``sketchcore.algorithms()`` lists
    the algorithms.

    Defaults: ``seed=0`` (deterministic: the same arguments give the same map every time; pass
    another seed for an independent sketch) and ``out_dim="auto"``: D from ``in_dim`` by the
    rule of ``sketchcore.auto_out_dim`` (norms and inner products of 1000 vectors within 10%
    with probability 0.95, scaled by the algorithm's measured variance, rounded up to a power of
    two, capped by the algorithm's largest D, by ``in_dim`` and by 2^16), visible as
    ``op.out_dim`` and logged once at INFO on the ``sketchcore`` logger.

    A float64 input converted to a backend that computes in float32 (jax without
    ``jax_enable_x64``) is computed and returned in float32, with a warning once per backend.

    Inputs: float32/float64 compute in their dtype; other floating dtypes (float16, bfloat16,
    also numpy arrays of ``ml_dtypes.bfloat16``) compute and return float32; integer and bool
    inputs are cast to the library's default float dtype; complex and non-numeric dtypes are
    refused. NaN and Inf are not checked (that would need a data-dependent reduction) and
    propagate into every output coordinate that depends on them.

    Naming a ``backend`` of another library converts the input to it. A tensor that requires
    grad is never silently detached for a backend that cannot differentiate through it (e.g. a
    torch tensor with ``backend="numpy"``): that raises ``InvalidOptionError`` asking for
    ``x.detach()``; ``backend=None`` (the tensor's own library) keeps the gradient.

    Sizes are checked before anything is allocated: a padded length beyond ``2**31`` (the int32
    gathers of the jax and cupy kernels) or host parameters larger than this machine's memory
    are refused with the bytes needed and the option to change.
    """

    def __init__(self, *, algo: str, in_dim: int, out_dim: int | str = "auto", seed: int = 0,
                 backend=None, **options):
        self.algo = _algo(algo)
        self.in_dim = _size("in_dim", in_dim)
        self.out_dim = _out_dim(self.algo, self.in_dim, out_dim, options)
        self.seed = _random.check_seed(seed)
        self.backend = backend
        cls = registry().algorithms[self.algo]
        #: the ``SketchAlgorithm`` instance that holds the map's parameters and computes it
        self.algorithm = cls(self.in_dim, self.out_dim, self.seed, **options)

    @property
    def impl(self):
        """Deprecated name of ``algorithm``."""
        warn_renamed_name("Sketch.impl", "Sketch.algorithm")
        return self.algorithm

    @property
    def options(self) -> dict:
        """A copy of the resolved options: the algorithm's ``default_options`` updated with the
        keywords given and with its automatic choices (``algorithm.options``)."""
        return dict(self.algorithm.options)

    def describe(self) -> dict:
        """A plain dict that identifies the map (equal dicts: equal maps)."""
        return self.algorithm.describe()

    @property
    def nbytes(self) -> int:
        """Bytes of host parameters this operator keeps (the dense baseline keeps none)."""
        return self.algorithm.params.nbytes()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()))
        return (f"Sketch(algo={self.algo!r}, in_dim={self.in_dim}, out_dim={self.out_dim}, "
                f"seed={self.seed}{', ' + opts if opts else ''})")

    def _prepare(self, x, backend, expected: int, what: str):
        be = resolve_backend(backend if backend is not None else self.backend, x)
        if not be.owns(x) and (backend is not None or self.backend is not None):
            if getattr(x, "requires_grad", False) is True:
                raise InvalidOptionError(
                    f"{what}: the input {describe_value(x)} requires grad and backend "
                    f"{be.name!r} cannot differentiate through it; call x.detach() first to "
                    "sketch its values, or use backend=None (the input's own library) to keep "
                    "the gradient."
                )
            before = getattr(x, "dtype", None)
            x = be.asarray(x)
            _warn_float32(be, before, x)
        xp = be.namespace()
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) == 0:
            raise ShapeError(f"{what} needs an array with a last axis of size {expected}, "
                             f"got {describe_value(x)}.")
        if shape[-1] != expected:
            raise ShapeError(
                f"{what} expects the last axis to have size {expected}, got shape {tuple(shape)}; "
                f"this operator maps {self.in_dim} -> {self.out_dim}."
            )
        dtype = x.dtype
        kind = _dtype_kind(xp, dtype)
        if kind == "complex":
            raise InvalidOptionError(f"{what}: complex input ({dtype}) is not supported; sketch the "
                                     "real and imaginary parts separately.")
        if kind is None:
            raise InvalidOptionError(
                f"{what}: cannot sketch an array of dtype {dtype}; pass real floating, integer or "
                "bool values (e.g. x.astype('float32')).")
        if kind == "cast":
            x = xp.astype(x, default_float(xp))
        elif dtype != xp.float32 and dtype != xp.float64:
            x = xp.astype(x, xp.float32)
        return be, x

    def _run(self, be, direction: str, x, out_dim: int):
        """Apply one direction, a bounded number of rows at a time when the batch is large, so
        the kernels' scratch memory stays O(chunk) instead of O(batch x N) (rows are
        independent, so the result is the same)."""
        rows = self.algorithm.rows_per_call()
        batch = x.shape[:-1]
        n_rows = 1
        for b in batch:
            n_rows *= b
        if rows is None or n_rows <= rows or be.scratch_is_bounded(self.algorithm, direction, x):
            return be.apply_op(self.algorithm, direction, x)
        xp = be.namespace()
        flat = xp.reshape(x, (n_rows, x.shape[-1]))
        parts = [be.apply_op(self.algorithm, direction, flat[r : r + rows, ...])
                 for r in range(0, n_rows, rows)]
        return xp.reshape(xp.concat(parts, axis=0), (*batch, out_dim))

    def apply(self, x, *, backend=None):
        """``Phi x`` for ``x`` of shape ``(..., in_dim)``: returns ``(..., out_dim)``."""
        be, x = self._prepare(x, backend, self.in_dim, "Sketch.apply")
        return self._run(be, "apply", x, self.out_dim)

    __call__ = apply

    def transpose(self, y, *, backend=None):
        """``Phi^T y`` for ``y`` of shape ``(..., out_dim)``: returns ``(..., in_dim)``."""
        be, y = self._prepare(y, backend, self.out_dim, "Sketch.transpose")
        return self._run(be, "transpose", y, self.in_dim)


def _dtype_kind(xp, dtype) -> str | None:
    """How ``_prepare`` treats a dtype: "real" (computed in float32 or float64), "complex",
    "cast" (integers and bools: to the default float) or None (refused). A floating dtype the namespace does not know (numpy arrays
    of ``ml_dtypes.bfloat16``) counts as real floating, as documented."""
    try:
        if xp.isdtype(dtype, "complex floating"):
            return "complex"
        if xp.isdtype(dtype, "real floating"):
            return "real"
        if xp.isdtype(dtype, "integral") or xp.isdtype(dtype, "bool"):
            return "cast"
    except (TypeError, ValueError):
        name = str(getattr(dtype, "name", dtype))
        return "real" if name.startswith(("float", "bfloat")) else None
    # numpy object arrays (e.g. of Python floats) are cast as before; strings and records are not
    return "cast" if getattr(dtype, "kind", None) == "O" else None


_OPS: OrderedDict = OrderedDict()
_OPS_MAX = 8


def _cached_sketch(algo, in_dim, out_dim, seed, options) -> Sketch:
    """The operator for these arguments, from a small LRU cache. Everything is validated first
    and the key is made of the validated values (and the options' types), so a refused value,
    or one equal to a cached value only after conversion (``8.0 == 8``), never finds a cached
    operator."""
    algo = _algo(algo)
    in_dim = _size("in_dim", in_dim)
    out_dim = _out_dim(algo, in_dim, out_dim, options)
    seed = _random.check_seed(seed)
    try:
        key = (algo, in_dim, out_dim, seed,
               tuple(sorted((k, _option_key(v)) for k, v in options.items())))
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


def sketch(x, *, algo: str, out_dim: int | str = "auto", seed: int = 0, backend=None,
           **options):
    """``Sketch(algo=algo, in_dim=x.shape[-1], out_dim=out_dim, seed=seed, **options)(x)``.

    ``seed=0`` is a deterministic default (the same call gives the same map every time): pass
    another seed for an independent sketch. ``out_dim="auto"`` picks D by the rule of
    ``sketchcore.auto_out_dim`` (from the input size N only, never from the batch, so every
    batch gets the same map) and logs the choice once. Operators are cached (the last 8), so
    calling this in a loop does not rebuild them.
    """
    shape = getattr(x, "shape", None)
    if not shape:
        raise ShapeError(f"sketch() needs an array of shape (..., N), got {describe_value(x)}; "
                         "convert it first, e.g. numpy.asarray(x).")
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
