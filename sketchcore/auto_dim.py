"""The ``out_dim="auto"`` rule: how large a D for a target error, decided without data.

``sketchcore.quality`` re-exports it beside the report measured on your own vectors.

**The rule.** A dense Gaussian sketch estimates a squared norm with relative standard deviation
``sqrt(2/D)`` and an inner product ``<x, y>`` with standard deviation ``sqrt((1 + cos^2)/D)``
times ``||x|| ||y||``, at most ``sqrt(2/D)``. A structured sketch's error variance is ``c`` times
that (``c`` = the algorithm's ``variance_factor``, measured: see docs/choosing.md). Asking that
all ``n (n + 1) / 2`` norms and pairwise inner products of ``n`` vectors stay within
``eps ||x|| ||y||`` with probability ``1 - delta`` (Gaussian tails and a union bound, the
Johnson-Lindenstrauss statement) gives

    D = 2 c z^2 / eps^2,    z = the (1 - delta / (n (n + 1))) quantile of N(0, 1),

rounded up to a power of two and capped by the algorithm's ``max_out_dim`` (the padded input
size), by the input size itself and by ``AUTO_MAX_OUT_DIM = 2^16``. For ``c = 1`` the bound is
within 5% of scikit-learn's ``johnson_lindenstrauss_min_dim(n, eps)``
(``4 ln n / (eps^2/2 - eps^3/3)``) at ``eps = 0.1`` and ``n >= 100`` (up to 20% lower at
``eps = 0.3``: a Gaussian tail where scikit-learn uses a Chernoff bound); it is shown beside it
as the familiar anchor. Defaults: ``eps = 0.1``, ``n = 1000``, ``delta = 0.05``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from statistics import NormalDist

from ._errors import InvalidOptionError, describe_value
from ._validate import check_algo, check_size
from .registry import registry

__all__ = [
    "auto_out_dim", "auto_choice", "resolve_auto", "AutoChoice", "jl_min_dim", "check_eps",
    "algo_class", "DEFAULT_EPS", "DEFAULT_N_VECTORS", "DEFAULT_DELTA", "AUTO_MAX_OUT_DIM",
]

DEFAULT_EPS = 0.1
DEFAULT_N_VECTORS = 1000
DEFAULT_DELTA = 0.05
#: the most ``out_dim="auto"`` ever picks (256 KiB per float32 sketch; the largest D of the
#: accuracy tables in docs/results.md): past it, choose D yourself with ``quality()``
AUTO_MAX_OUT_DIM = 1 << 16

log = logging.getLogger("sketchcore")
_LOGGED: set = set()


def jl_min_dim(n_vectors: int, eps: float) -> int:
    """scikit-learn's ``johnson_lindenstrauss_min_dim(n_vectors, eps=eps)``, the same formula
    (``4 ln n / (eps^2/2 - eps^3/3)``) without importing scikit-learn."""
    check_eps(eps)
    n = max(1, int(n_vectors))
    return int(4 * math.log(n) / (eps**2 / 2 - eps**3 / 3))


@dataclass(frozen=True)
class AutoChoice:
    """What ``out_dim="auto"`` chose and why. ``rule_out_dim``: the smallest power of two D with
    ``D >= 2 c(D) z^2 / eps^2`` (``c(D)`` the algorithm's variance factor at D); ``out_dim``:
    that, capped by ``limit`` = the smallest of the algorithm's ``max_out_dim``, ``in_dim`` (no
    point in a sketch longer than the vector) and ``AUTO_MAX_OUT_DIM``; ``eps_reached``: the
    relative error the rule predicts at ``out_dim`` (at most ``eps`` unless capped)."""

    out_dim: int
    rule_out_dim: int
    limit: int
    limit_reason: str
    algo: str
    in_dim: int
    eps: float
    n_vectors: int
    delta: float
    variance_factor: float
    eps_reached: float

    @property
    def capped(self) -> bool:
        return self.out_dim < self.rule_out_dim

    def describe(self) -> str:
        text = (f"out_dim='auto' for algo={self.algo!r}, in_dim={self.in_dim}: D = {self.out_dim}."
                f" The rule (all norms and inner products of {self.n_vectors} vectors within "
                f"eps={self.eps:g} with probability {1 - self.delta:g}: D >= 2 c z^2 / eps^2, "
                f"c = {self.variance_factor:.3g} for {self.algo}) asks for D = "
                f"{self.rule_out_dim}; scikit-learn's johnson_lindenstrauss_min_dim gives "
                f"{jl_min_dim(self.n_vectors, self.eps)}")
        if self.capped:
            text += (f". Capped at {self.limit} ({self.limit_reason}), where the rule predicts a "
                     f"relative error up to {self.eps_reached:.3g}")
        return text + ". Pass out_dim=... to choose; sketchcore.quality(x) measures on your data."


def check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise InvalidOptionError(f"eps must be a number in (0, 1), got {describe_value(eps)}; "
                                 "e.g. eps=0.1 (10% relative error).")
    return float(eps)


def algo_class(algo: str):
    return registry().algorithms[check_algo(algo)]


def auto_choice(in_dim: int, algo: str = "affd", *, eps: float = DEFAULT_EPS,
                n_vectors: int = DEFAULT_N_VECTORS, delta: float = DEFAULT_DELTA,
                **options) -> AutoChoice:
    """The ``out_dim="auto"`` decision with its reasons (see the module docstring)."""
    eps = check_eps(eps)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise InvalidOptionError(f"delta must be in (0, 1), got {describe_value(delta)}.")
    n = check_size("n_vectors", n_vectors)
    in_dim = check_size("in_dim", in_dim)
    cls = algo_class(algo)
    pairs = n * (n + 1) // 2
    z = NormalDist().inv_cdf(1.0 - delta / (2 * pairs))
    limits = [(cls.out_dim_limit(in_dim, **options), f"the most algo={cls.name!r} allows"),
              (in_dim, "the input size"), (AUTO_MAX_OUT_DIM, "the most out_dim='auto' picks")]
    limit, reason = min(limits, key=lambda item: item[0])

    def enough(d: int) -> bool:
        return d >= 2.0 * cls.variance_factor_at(d) * z * z / (eps * eps)

    d = 1  # the smallest power of two that meets its own requirement (c may depend on D)
    while not enough(d) and d < 1 << 40:
        d *= 2
    chosen = min(d, limit)
    reached = z * math.sqrt(2.0 * cls.variance_factor_at(chosen) / chosen)
    return AutoChoice(chosen, d, limit, reason, cls.name, in_dim, eps, n, float(delta),
                      cls.variance_factor_at(d), reached)


def auto_out_dim(in_dim: int, algo: str = "affd", *, eps: float = DEFAULT_EPS,
                 n_vectors: int = DEFAULT_N_VECTORS, delta: float = DEFAULT_DELTA,
                 **options) -> int:
    """The D that ``out_dim="auto"`` picks for ``algo`` at ``in_dim``: enough that all norms
    and pairwise inner products of ``n_vectors`` vectors keep a relative error of at most
    ``eps`` with probability ``1 - delta`` (see the module docstring), rounded up to a power of
    two, capped by the algorithm's ``max_out_dim``, by ``in_dim`` and by ``AUTO_MAX_OUT_DIM``
    (2^16). Pass other ``eps``/``n_vectors`` here and the result as ``out_dim`` for another
    target."""
    return auto_choice(in_dim, algo, eps=eps, n_vectors=n_vectors, delta=delta,
                       **options).out_dim


def resolve_auto(algo: str, in_dim: int, options: dict) -> int:
    """``out_dim="auto"`` with the default target, logged once per (algo, in_dim, D) at INFO on
    the ``sketchcore`` logger."""
    choice = auto_choice(in_dim, algo, **options)
    key = (choice.algo, choice.in_dim, choice.out_dim)
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.info("%s", choice.describe())
    return choice.out_dim
