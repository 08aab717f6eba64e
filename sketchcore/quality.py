"""How large a D: the ``out_dim="auto"`` rule, and a quality report measured on your own vectors.

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

**The report.** ``quality(x, algo=..., out_dims=...)`` sketches the rows of ``x`` at each D and
measures what the rule predicts: the distortion of squared norms ``| ||Phi x||^2 / ||x||^2 - 1 |``
and of pairwise inner products ``|<Phi x, Phi y> - <x, y>| / (||x|| ||y||)``, and the Pearson r
of sketched against exact inner products; it recommends the smallest D whose largest distortion
is at most ``target``.
"""

from __future__ import annotations

import logging
import math
import sys
import types
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from ._errors import InvalidOptionError, ShapeError, describe_value

__all__ = [
    "auto_out_dim", "AutoChoice", "jl_min_dim", "quality", "QualityReport", "calibrate",
    "DEFAULT_EPS", "DEFAULT_N_VECTORS", "DEFAULT_DELTA", "AUTO_MAX_OUT_DIM",
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
    _check_eps(eps)
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


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise InvalidOptionError(f"eps must be a number in (0, 1), got {describe_value(eps)}; "
                                 "e.g. eps=0.1 (10% relative error).")
    return float(eps)


def _algo_class(algo: str):
    from .api import _algo
    from .registry import registry

    return registry().algorithms[_algo(algo)]


def auto_choice(in_dim: int, algo: str = "affd", *, eps: float = DEFAULT_EPS,
                n_vectors: int = DEFAULT_N_VECTORS, delta: float = DEFAULT_DELTA,
                **options) -> AutoChoice:
    """The ``out_dim="auto"`` decision with its reasons (see the module docstring)."""
    from .api import _size

    eps = _check_eps(eps)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise InvalidOptionError(f"delta must be in (0, 1), got {describe_value(delta)}.")
    n = _size("n_vectors", n_vectors)
    in_dim = _size("in_dim", in_dim)
    cls = _algo_class(algo)
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


# ---- measuring on the user's vectors ------------------------------------------------------------
def _host_rows(x, max_vectors: int | None) -> np.ndarray:
    from .testing.conformance import to_numpy

    shape = getattr(x, "shape", None)
    if max_vectors is not None and shape is not None and len(shape) == 2 \
            and shape[0] > max_vectors:
        x = x[:max_vectors]  # before any copy (x may be a memory-mapped file)
    if isinstance(x, (str, bytes)) or getattr(x, "shape", None) is None:
        try:
            x = np.asarray(x)
        except Exception:  # noqa: BLE001 - anything numpy cannot read
            raise ShapeError(f"quality() needs an array of shape (n, N), got "
                             f"{describe_value(x)}.") from None
    a = to_numpy(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[-1] < 1 or a.shape[0] < 1:
        raise ShapeError(f"quality() needs vectors as the rows of an (n, N) array, got shape "
                         f"{tuple(a.shape)}.")
    if a.dtype.kind not in "fiub":
        raise InvalidOptionError(f"quality() needs real numbers, got dtype {a.dtype}.")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if max_vectors is not None and a.shape[0] > max_vectors:
        a = a[:max_vectors]
    return a


def _default_dims(limit: int, in_dim: int) -> list[int]:
    """Powers of two from 16 up to the smallest of the algorithm's limit, N and 2^14 (a sketch
    as long as the vector measures nothing)."""
    top = min(limit, in_dim, 1 << 14)
    dims = [1 << k for k in range(4, top.bit_length()) if 1 << k <= top]
    return dims or [top]


@dataclass
class QualityReport:
    """Distortion and Pearson r of sketched vs exact norms and inner products, per algo and D.

    ``rows``: one dict per (algo, D) with ``norm_max``, ``pair_max``, ``pair_p95`` and
    ``pearson``; ``recommended``: algo -> the smallest D whose ``max(norm_max, pair_max)`` is at
    most ``target`` (None if no D tried reaches it); ``auto``: algo -> what ``out_dim="auto"``
    would pick for these ``n`` vectors at ``eps = target``; ``jl_min_dim``: scikit-learn's
    ``johnson_lindenstrauss_min_dim(n, eps=target)``.
    """

    in_dim: int
    n_vectors: int
    seed: int
    target: float
    rows: list = field(default_factory=list)
    recommended: dict = field(default_factory=dict)
    auto: dict = field(default_factory=dict)
    jl_min_dim: int = 0
    jl_source: str = "formula"

    def to_dict(self) -> dict:
        return {"in_dim": self.in_dim, "n_vectors": self.n_vectors, "seed": self.seed,
                "target": self.target, "rows": list(self.rows),
                "recommended": dict(self.recommended), "auto": dict(self.auto),
                "jl_min_dim": self.jl_min_dim}

    def format_table(self) -> str:
        lines = [
            f"sketch quality on {self.n_vectors} vectors of N = {self.in_dim} (seed {self.seed})",
            "norm: max | |Phi x|^2/|x|^2 - 1 |;  pair: |<Phi x,Phi y> - <x,y>| / (|x||y|), max "
            "and",
            "95th percentile over pairs;  r: Pearson r of sketched vs exact inner products",
            f"{'algo':<6} {'D':>7} {'norm max':>9} {'pair max':>9} {'pair p95':>9} {'r':>7}",
        ]
        for row in self.rows:
            lines.append(f"{row['algo']:<6} {row['out_dim']:>7} {_fmt(row['norm_max']):>9} "
                         f"{_fmt(row['pair_max']):>9} {_fmt(row['pair_p95']):>9} "
                         f"{_fmt(row['pearson']):>7}")
        anchor = ("scikit-learn's johnson_lindenstrauss_min_dim" if self.jl_source == "sklearn"
                  else "the Johnson-Lindenstrauss bound of scikit-learn (4 ln n / (eps^2/2 - "
                       "eps^3/3); scikit-learn not installed)")
        lines.append(f"target: every norm and pair within {self.target:g} (relative)")
        for algo, d in self.recommended.items():
            got = (f"smallest D tried that reaches it: {d}" if d is not None
                   else "no D tried reaches it (try larger out_dims)")
            lines.append(f"  {algo:<6} {got};  out_dim='auto' rule for n={self.n_vectors}: "
                         f"{self.auto.get(algo)}")
        lines.append(f"  {anchor}(n_samples={self.n_vectors}, eps={self.target:g}) = "
                     f"{self.jl_min_dim}")
        return "\n".join(lines)

    __str__ = format_table

    def plot(self, path, title: str = "") -> None:
        """Largest distortion and Pearson r against D, one line per algorithm, with the target
        and the Johnson-Lindenstrauss anchor (needs matplotlib)."""
        try:
            import matplotlib
        except ImportError as err:
            raise ImportError("plotting needs matplotlib: pip install matplotlib") from err
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for algo in dict.fromkeys(r["algo"] for r in self.rows):
            rs = [r for r in self.rows if r["algo"] == algo]
            ds = [r["out_dim"] for r in rs]
            worst = [max(r["norm_max"], r["pair_max"]) for r in rs]
            line, = ax1.plot(ds, worst, "o-", label=f"{algo} max")
            ax1.plot(ds, [r["pair_p95"] for r in rs], "x--", color=line.get_color(), alpha=0.6,
                     label=f"{algo} pair p95")
            ax2.plot(ds, [r["pearson"] for r in rs], "o-", color=line.get_color(), label=algo)
        ax1.axhline(self.target, color="gray", ls=":", label=f"target {self.target:g}")
        for ax in (ax1, ax2):
            ax.axvline(self.jl_min_dim, color="black", ls="-.", alpha=0.5,
                       label=f"JL min dim {self.jl_min_dim}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("D")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        ax1.set_yscale("log")
        ax1.set_ylabel("relative distortion")
        ax2.set_ylabel("Pearson r (sketched vs exact inner products)")
        fig.suptitle(title or f"sketch quality, {self.n_vectors} vectors, N = {self.in_dim}")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _gram64(a: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """``a @ other.T`` accumulated in float64, a block of columns at a time (the float64
    temporaries stay bounded whatever N is)."""
    other = a if other is None else other
    step = max(1, (1 << 24) // max(1, a.shape[0] + other.shape[0]))
    out = np.zeros((a.shape[0], other.shape[0]))
    for c in range(0, a.shape[1], step):
        out += a[:, c:c + step].astype(np.float64) @ other[:, c:c + step].astype(np.float64).T
    return out


def _distortions(gram, y) -> dict:
    """Norm and pair distortions of sketched rows ``y`` against the exact Gram matrix."""
    y = np.asarray(y, dtype=np.float64)
    sk_gram = y @ y.T
    norms2 = np.diagonal(gram)
    live = norms2 > 0
    ratio = np.diagonal(sk_gram)[live] / norms2[live]
    n = gram.shape[0]
    iu = np.triu_indices(n, k=1)
    keep = live[iu[0]] & live[iu[1]]
    i, j = iu[0][keep], iu[1][keep]
    scale = np.sqrt(norms2[i] * norms2[j])
    pair = np.abs(sk_gram[i, j] - gram[i, j]) / scale if i.size else np.zeros(0)
    r = float("nan")
    if i.size >= 2 and np.std(gram[i, j]) > 0 and np.std(sk_gram[i, j]) > 0:
        r = float(np.corrcoef(sk_gram[i, j], gram[i, j])[0, 1])
    norm_err = np.abs(ratio - 1.0)
    return {
        "norm_max": float(norm_err.max()) if norm_err.size else float("nan"),
        "pair_max": float(pair.max()) if pair.size else 0.0,
        "pair_p95": float(np.quantile(pair, 0.95)) if pair.size else 0.0,
        "pearson": r,
        "norm_sq": norm_err**2,
        "pair_sq_rel": (pair**2 / (1.0 + (gram[i, j] / scale) ** 2)) if pair.size else pair,
    }


def quality(x, *, algo="affd", out_dims=None, target: float = DEFAULT_EPS, seed: int = 0,
            backend=None, max_vectors: int | None = 1000, **options) -> QualityReport:
    """Measure what each D buys on your own vectors (the rows of ``x``, shape ``(n, N)``).

    For each algorithm (``algo``: a name or a list of names) and each ``D`` in ``out_dims``
    (default: powers of two from 16 up to N or 2^14), sketches the rows with
    ``Sketch(algo, N, D, seed, **options)`` and reports the distortion of squared norms and
    pairwise inner products (relative to ``||x|| ||y||``) and the Pearson r of sketched vs exact
    inner products, then recommends the smallest D whose largest distortion is at most
    ``target``. Only the first ``max_vectors`` rows are used (the exact Gram matrix costs
    ``n^2 N``). Print the result for a table; ``.plot(path)`` draws it (matplotlib).
    """
    from .api import Sketch, _size

    target = _check_eps(target)
    if max_vectors is not None:
        max_vectors = _size("max_vectors", max_vectors)
    a = _host_rows(x, max_vectors)
    n, dim = a.shape
    algos = [algo] if isinstance(algo, str) else list(algo)
    if not algos:
        raise InvalidOptionError("quality() needs at least one algorithm, e.g. algo='affd'.")
    gram = _gram64(a)
    report = QualityReport(in_dim=dim, n_vectors=n, seed=seed, target=target)
    try:
        from sklearn.random_projection import johnson_lindenstrauss_min_dim
    except ImportError:
        report.jl_min_dim, report.jl_source = jl_min_dim(n, target), "formula"
    else:
        report.jl_min_dim = int(johnson_lindenstrauss_min_dim(n, eps=target))
        report.jl_source = "sklearn"
    for name in algos:
        cls = _algo_class(name)
        limit = cls.out_dim_limit(dim, **options)
        dims = _default_dims(limit, dim) if out_dims is None else [_size("out_dims", d)
                                                             for d in out_dims]
        report.recommended[cls.name] = None
        report.auto[cls.name] = auto_out_dim(dim, cls.name, eps=target, n_vectors=max(2, n),
                                             **options)
        for d in sorted(set(dims)):
            if d > limit:
                continue
            op = Sketch(algo=cls.name, in_dim=dim, out_dim=d, seed=seed, **options)
            from .testing.conformance import to_numpy

            y = to_numpy(op.apply(a, backend=backend))
            stats = _distortions(gram, y)
            row = {"algo": cls.name, "out_dim": d,
                   **{k: stats[k] for k in ("norm_max", "pair_max", "pair_p95", "pearson")}}
            report.rows.append(row)
            worst = max(row["norm_max"], row["pair_max"])
            if report.recommended[cls.name] is None and worst <= target:
                report.recommended[cls.name] = d
    return report


def calibrate(x, algo: str, out_dims, *, seeds: int = 4, backend=None, **options) -> dict:
    """The measured ``variance_factor`` of ``algo`` on the rows of ``x``: for each D, the mean
    squared relative error of norms and of pairwise inner products over ``seeds`` maps, divided
    by a dense Gaussian sketch's (``2/D`` and ``(1 + cos^2)/D``); returns D -> (norm factor,
    pair factor). Set a new algorithm's ``variance_factor`` to the largest of these on
    representative data."""
    from .api import Sketch
    from .testing.conformance import to_numpy

    a = _host_rows(x, None)
    gram = _gram64(a)
    out = {}
    for d in out_dims:
        norm, pair = [], []
        for s in range(seeds):
            op = Sketch(algo=algo, in_dim=a.shape[1], out_dim=d, seed=s, **options)
            stats = _distortions(gram, to_numpy(op.apply(a, backend=backend)))
            norm.append(stats["norm_sq"])
            pair.append(stats["pair_sq_rel"])
        norm_f = float(np.mean(np.concatenate(norm))) * d / 2.0
        pair_all = np.concatenate(pair)
        pair_f = float(np.mean(pair_all)) * d if pair_all.size else float("nan")
        out[d] = (norm_f, pair_f)
    return out


class _CallableModule(types.ModuleType):
    """``sketchcore.quality`` is both this module (``sketchcore.quality.calibrate``, ...) and
    the function ``quality``: ``sketchcore.quality(x, ...)`` calls it."""

    def __call__(self, *args, **kwargs):
        return quality(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
