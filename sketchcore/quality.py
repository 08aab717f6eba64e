"""How large a D: the ``out_dim="auto"`` rule (re-exported), and a quality report measured on your
own vectors.

**The rule** (``auto_dim.py``): the smallest power of two D at which all norms and pairwise inner
products of ``n`` vectors stay within ``eps`` with probability ``1 - delta``, from the algorithm's
measured error variance and no data.

**The report.** ``quality(x, algo=..., out_dims=...)`` sketches the rows of ``x`` at each D and
measures what the rule predicts: the distortion of squared norms ``| ||Phi x||^2 / ||x||^2 - 1 |``
and of pairwise inner products ``|<Phi x, Phi y> - <x, y>| / (||x|| ||y||)``, and the Pearson r
of sketched against exact inner products; it recommends the smallest D whose largest distortion
is at most ``target``.
"""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass, field

import numpy as np

from ._errors import InvalidOptionError, ShapeError, describe_value
from ._validate import check_size
from .auto_dim import (
    AUTO_MAX_OUT_DIM,
    DEFAULT_DELTA,
    DEFAULT_EPS,
    DEFAULT_N_VECTORS,
    AutoChoice,
    algo_class,
    auto_choice,
    auto_out_dim,
    check_eps,
    jl_min_dim,
    resolve_auto,
)

__all__ = [
    "auto_out_dim", "auto_choice", "resolve_auto", "AutoChoice", "jl_min_dim", "quality",
    "QualityReport", "calibrate", "DEFAULT_EPS", "DEFAULT_N_VECTORS", "DEFAULT_DELTA",
    "AUTO_MAX_OUT_DIM", "gram64",
]


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


def gram64(a: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
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
    from .api import Sketch

    target = check_eps(target)
    if max_vectors is not None:
        max_vectors = check_size("max_vectors", max_vectors)
    a = _host_rows(x, max_vectors)
    n, dim = a.shape
    algos = [algo] if isinstance(algo, str) else list(algo)
    if not algos:
        raise InvalidOptionError("quality() needs at least one algorithm, e.g. algo='affd'.")
    gram = gram64(a)
    report = QualityReport(in_dim=dim, n_vectors=n, seed=seed, target=target)
    try:
        from sklearn.random_projection import johnson_lindenstrauss_min_dim
    except ImportError:
        report.jl_min_dim, report.jl_source = jl_min_dim(n, target), "formula"
    else:
        report.jl_min_dim = int(johnson_lindenstrauss_min_dim(n, eps=target))
        report.jl_source = "sklearn"
    for name in algos:
        cls = algo_class(name)
        limit = cls.out_dim_limit(dim, **options)
        dims = _default_dims(limit, dim) if out_dims is None else [check_size("out_dims", d)
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
    gram = gram64(a)
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
