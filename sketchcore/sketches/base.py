"""The base of every sketch: sizes, seed, options, host parameters, and the two directions."""

from __future__ import annotations

import math
from typing import ClassVar

from .._deprecated import warn_renamed_name
from .._errors import InvalidOptionError, describe_value, unknown
from ..kernels import pad_last
from ..param_cache import ParamCache, arrays_sha256, host_memory_bytes

__all__ = ["SketchAlgorithm", "check_pow2_option", "check_int_option", "MAX_PADDED_LENGTH"]

#: the longest (padded) vector an operator may transform: the jax and cupy kernels gather with
#: int32 indices, so a padded length must stay <= 2**31
MAX_PADDED_LENGTH = 2**31


class SketchAlgorithm:
    """A seeded random linear map ``Phi: R^in_dim -> R^out_dim`` with its transpose.

    Subclasses set ``name``, ``summary`` and ``default_options`` (name -> default), build their
    host parameters in ``_build`` and implement ``apply`` / ``transpose`` (``Phi`` and
    ``Phi^T``, the names ``Sketch`` uses) on arrays whose last axis is ``in_dim`` / ``out_dim``,
    using only the namespace and kernels of the backend they get.

    Options: ``default_options`` (class) are the defaults; ``options`` (instance) are this map's
    resolved options, the defaults updated with the keywords given and with what ``_build``
    chose (``Sketch.options`` is a copy of them).

    The old names are kept one release with a ``DeprecationWarning``: a subclass that defines
    ``forward`` / ``adjoint`` or a class-level ``options`` dict is mapped onto ``apply`` /
    ``transpose`` / ``default_options`` when it is defined; calling ``forward`` / ``adjoint``,
    reading ``opts`` or the class attribute ``options`` warn and use the new names.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    default_options: ClassVar[dict[str, object]] = {}
    #: this map's resolved options (set in ``__init__``); read on the class, the old name of
    #: ``default_options``
    options: dict[str, object]
    #: the variance of this sketch's relative inner-product error, as a multiple of a dense
    #: Gaussian sketch's (``2/D``): what ``out_dim="auto"`` scales D by. Measured for the
    #: built-in sketches (docs/choosing.md); ``sketchcore.quality.calibrate`` measures a new one
    variance_factor: ClassVar[float] = 1.0

    @classmethod
    def variance_factor_at(cls, out_dim: int) -> float:
        """``variance_factor`` at sketch size ``out_dim`` (constant unless overridden: QK's
        grows like sqrt(D))."""
        return float(cls.variance_factor)

    def __init_subclass__(cls, **kwargs) -> None:
        """Map the old names a subclass may still define onto the new ones (with a warning)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "options" in own and not isinstance(own["options"], _DefaultsAlias):
            warn_renamed_name(f"{cls.__name__}.options (class-level defaults)",
                              f"{cls.__name__}.default_options", stacklevel=3)
            if "default_options" not in own:
                cls.default_options = own["options"]
            delattr(cls, "options")
        for old, new in _RENAMED_METHODS.items():
            if old in own and new not in own:
                warn_renamed_name(f"{cls.__name__}.{old}", f"{cls.__name__}.{new}",
                                  stacklevel=3)
                setattr(cls, new, own[old])

    def __init__(self, in_dim: int, out_dim: int, seed: int, **options) -> None:
        bad = sorted(set(options) - set(self.default_options))
        if bad:
            raise unknown(
                f"option for algo={self.name!r}:",
                bad[0],
                self.default_options or ["(none)"],
                "Pass only these keyword options.",
            )
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.seed = seed
        self.options = {**self.default_options, **options}
        self.params = ParamCache()
        limit = self.max_out_dim()
        if out_dim > limit:
            raise InvalidOptionError(self.out_dim_error(limit))
        self._sha256: str | None = None
        self._build()

    @classmethod
    def out_dim_limit(cls, in_dim: int, **options) -> int:
        """``max_out_dim()`` for these arguments without building the map (what
        ``out_dim="auto"`` is capped by). It calls ``max_out_dim`` on an unbuilt instance that
        has ``in_dim``, ``options`` (``default_options`` updated with ``options``) and
        ``out_dim = 1``; override it if your ``max_out_dim`` needs anything built."""
        probe = cls.__new__(cls)
        probe.in_dim, probe.out_dim, probe.seed = in_dim, 1, 0
        probe.options = {**cls.default_options, **options}
        return int(probe.max_out_dim())

    # ---- to implement -----------------------------------------------------------------------
    def max_out_dim(self) -> int:
        raise NotImplementedError

    def out_dim_error(self, limit: int) -> str:
        """The message for ``out_dim > max_out_dim()``: the value, the limit and the fix."""
        return (
            f"out_dim={self.out_dim} is larger than algo={self.name!r} allows for "
            f"in_dim={self.in_dim} (at most {limit}, the padded input size); lower out_dim to "
            f"at most {limit}, or use algo='dense' (any out_dim up to 2**24)."
        )

    def _build(self) -> None:
        raise NotImplementedError

    def apply(self, be, x):
        """``Phi x`` for ``x`` of shape ``(..., in_dim)`` with backend ``be``'s kernels."""
        raise NotImplementedError

    def transpose(self, be, y):
        """``Phi^T y`` for ``y`` of shape ``(..., out_dim)`` with backend ``be``'s kernels."""
        raise NotImplementedError

    # ---- old names, kept one release --------------------------------------------------------
    def forward(self, be, x):
        """Deprecated name of ``apply``."""
        warn_renamed_name("SketchAlgorithm.forward", "SketchAlgorithm.apply")
        return self.apply(be, x)

    def adjoint(self, be, y):
        """Deprecated name of ``transpose``."""
        warn_renamed_name("SketchAlgorithm.adjoint", "SketchAlgorithm.transpose")
        return self.transpose(be, y)

    @property
    def opts(self) -> dict:
        """Deprecated name of ``options`` (the resolved options)."""
        warn_renamed_name("SketchAlgorithm.opts", "SketchAlgorithm.options")
        return self.options

    @opts.setter
    def opts(self, value: dict) -> None:
        warn_renamed_name("SketchAlgorithm.opts", "SketchAlgorithm.options")
        self.options = value

    #: scratch budget of one kernel call, in elements (rows x padded length); see rows_per_call
    SCRATCH_ELEMENTS = 1 << 24

    def rows_per_call(self) -> int | None:
        """How many batch rows one call may process (None: all). The structured sketches keep
        a few padded-length temporaries per row; bounding the rows keeps that scratch at
        ``SCRATCH_ELEMENTS`` whatever the batch size."""
        width = max(getattr(self, "n_pad", self.in_dim), self.out_dim)
        return max(1, self.SCRATCH_ELEMENTS // width)

    def identity_samples(self) -> dict:
        """Extra arrays for ``params_sha256`` from an algorithm that keeps no host parameters
        (it regenerates its numbers): a fixed sample of what it generates. Default: none."""
        return {}

    # ---- helpers ----------------------------------------------------------------------------
    def params_sha256(self) -> str:
        """sha256 of the operator's numbers: its primary host parameters (``ParamCache.sha256``),
        plus ``identity_samples()`` where it keeps none. Computed on first use and cached."""
        if self._sha256 is None:
            samples = self.identity_samples()
            if samples:
                primary = {k: v for k, v in self.params.host.items()
                           if k not in self.params.derived}
                self._sha256 = arrays_sha256({**primary, **{f"sample:{k}": v
                                                            for k, v in samples.items()}})
            else:
                self._sha256 = self.params.sha256()
        return self._sha256

    def describe(self) -> dict:
        """What identifies this map (stored with sketches; equal descriptions = equal maps).

        Besides the arguments (algo, sizes, seed, resolved options), ``params_sha256`` is a
        sha256 over the map's actual numbers: every primary host parameter (name, dtype, shape,
        raw bytes; derived arrays such as transposes are left out), or for a sketch that keeps
        none (``dense``) a fixed sample of the numbers it generates. The arguments alone do not
        pin the numbers: numpy does not promise stable random streams across versions. The
        digest is of the raw float64 bytes, deliberately strict: a numpy release (or a change of
        this library) that changes even the last bit of one parameter makes a different map, and
        a store written with the old one is refused rather than silently mixed. The parameters
        are built without BLAS or LAPACK (the Haar factors of ``qk`` and ``preconditioner="q"``
        come from ``sketchcore.portable_qr``, not LAPACK's QR, whose last bits vary with the
        CPU), so the same arguments give the same digest on every machine with the same numpy;
        numpy's Gaussian tail values (about 1 in 4000) go through the C library's ``log1p``,
        which can still differ in the last bit between C libraries and CPUs.
        """
        return {
            "algo": self.name,
            "in_dim": self.in_dim,
            "out_dim": self.out_dim,
            "seed": self.seed,
            "options": {k: _plain(v) for k, v in sorted(self.options.items())},
            "params_sha256": self.params_sha256(),
        }

    def check_fits(self, *, n_pad: int | None, param_bytes: int, cause: str = "", fix: str = "",
                   length_cause: str = "") -> None:
        """Refuse, before allocating anything, an operator whose padded vectors are longer than
        ``MAX_PADDED_LENGTH`` or whose host parameters (``param_bytes``, what the build would
        allocate) exceed this machine's memory. ``cause``/``fix`` name the option responsible
        for the bytes and what to do; ``length_cause`` what sets the padded length (default
        ``in_dim``)."""
        if n_pad is not None and n_pad > MAX_PADDED_LENGTH:
            raise InvalidOptionError(
                f"algo={self.name!r}: {length_cause or f'in_dim={self.in_dim}'} pads each vector "
                f"to {n_pad}{_pow2_text(n_pad)} coordinates, more than the 2**31 = "
                f"{MAX_PADDED_LENGTH} a padded vector may have (the jax and cupy kernels index "
                f"it with int32); the operator would need {param_bytes} bytes "
                f"({_gib(param_bytes)}) of host parameters and {4 * n_pad} bytes "
                f"({_gib(4 * n_pad)}) for each float32 vector it transforms. Split the vector "
                "and sketch its parts with independent operators, summed (the block-sum form; "
                "GradientSketcher(layout='blocks') does this per tensor)."
            )
        memory = host_memory_bytes()
        if memory is not None and param_bytes > memory:
            raise InvalidOptionError(
                f"algo={self.name!r}: {cause or f'in_dim={self.in_dim}'} needs {param_bytes} "
                f"bytes ({_gib(param_bytes)}) of host parameters, more than this machine's "
                f"{memory} bytes ({_gib(memory)}) of memory. {fix}".rstrip()
            )

    @staticmethod
    def pad(xp, x, n):
        return pad_last(xp, x, n)

    @staticmethod
    def scale(n: int, d: int) -> float:
        return math.sqrt(n / d)


#: old method name -> new, mapped in ``SketchAlgorithm.__init_subclass__``
_RENAMED_METHODS = {"forward": "apply", "adjoint": "transpose"}


class _DefaultsAlias:
    """``SketchAlgorithm.options`` read on a class: the old name of ``default_options`` (with a
    warning). An instance's own ``options`` (its resolved options) takes precedence."""

    def __get__(self, obj, owner=None):
        owner = owner if owner is not None else type(obj)
        warn_renamed_name(f"{owner.__name__}.options (class-level defaults)",
                          f"{owner.__name__}.default_options")
        return owner.default_options


SketchAlgorithm.options = _DefaultsAlias()


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def _pow2_text(n: int) -> str:
    return f" = 2**{n.bit_length() - 1}" if n & (n - 1) == 0 else ""


def _plain(v):
    if isinstance(v, tuple):
        return list(v)
    return v


def check_int_option(algo: str, name: str, value, low: int = 1) -> int:
    import operator

    if isinstance(value, bool):
        raise InvalidOptionError(f"{algo}: option {name} must be an integer >= {low}, got {value!r}.")
    try:
        v = operator.index(value)
    except TypeError:
        raise InvalidOptionError(
            f"{algo}: option {name} must be an integer >= {low}, got {describe_value(value)} "
            f"({type(value).__name__})."
        ) from None
    if v < low:
        raise InvalidOptionError(
            f"{algo}: option {name} must be >= {low}, got {describe_value(v)}.")
    return v


def check_pow2_option(algo: str, name: str, value, low: int = 2) -> int:
    v = check_int_option(algo, name, value, low)
    if v & (v - 1):
        raise InvalidOptionError(
            f"{algo}: option {name} must be a power of two >= {low}, got {describe_value(v)} "
            f"(e.g. {describe_value(1 << (v.bit_length() - 1))})."
        )
    return v
