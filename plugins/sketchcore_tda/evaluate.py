"""Sketched gradient inner products against exact ones, and the layer-selection baseline.

On a model small enough for full per-example gradients: ``G_train`` (n, N) and ``G_test`` (m, N)
give the exact scores ``G_test G_train^T`` (n*m pairs; the paper uses 2^12). For every algorithm
and sketch dimension D the same gradients are sketched with ``Phi`` (explicit, flat: the paper's
setting) and the Pearson and Spearman r of the sketched against the exact scores are reported,
averaged over sketch seeds, beside an ideal dense Gaussian sketch simulated on the same Gram
matrix (``sketchcore.ideal_gaussian``): an algorithm far below that band on some data shows
itself, with its variance factor measured against the ideal. The baseline restricts the gradient
to one layer (module) at a time, with no sketch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["evaluate", "evaluate_gradients", "Evaluation", "exact_gradients", "layer_groups",
           "ideal_gaussian_r", "equivalent_log2_dim", "DEFAULT_ALGOS"]

DEFAULT_ALGOS = ("fjl", "affd", "afjl", "qk", "ffd")
DENSE_MAX_ENTRIES = 2**31  # dense regenerates its D x N Gaussian matrix: skip beyond this


def exact_gradients(gs, data, *, batch_size: int = 16, progress: bool = False):
    """Full per-example gradients (n, N) float32 of all examples of ``data`` (arrays)."""
    from .sources import as_source

    source = as_source(data)
    out = []
    for _r, batch in source.batches(0, source.num_examples, batch_size):
        out.append(np.asarray(gs.full_gradients(batch), dtype=np.float32))
    return np.concatenate(out, axis=0)


def layer_groups(names, shapes, by: str = "module") -> dict[str, np.ndarray]:
    """Column indices of the flat gradient per layer: ``by="module"`` groups tensors by module
    name (the name without its last component, e.g. weight and bias together); ``"tensor"``
    keeps each tensor apart."""
    if by not in ("module", "tensor"):
        raise ValueError(f"by must be 'module' or 'tensor', got {by!r}.")
    groups: dict[str, list] = {}
    start = 0
    for name, shape in zip(names, shapes):
        size = int(math.prod(shape))
        key = name.rsplit(".", 1)[0] if by == "module" and "." in name else name
        groups.setdefault(key, []).append(np.arange(start, start + size))
        start += size
    return {k: np.concatenate(v) for k, v in groups.items()}


def _corr(est, exact):
    from scipy.stats import pearsonr, spearmanr

    a, b = np.ravel(est), np.ravel(exact)
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(a, b)[0]), float(spearmanr(a, b)[0])


def _pearson(est, exact) -> float:
    a, b = np.ravel(est) - np.mean(est), np.ravel(exact) - np.mean(exact)
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else float("nan")


def _sketch_rows(op, g, rows: int = 16):
    return np.concatenate([np.asarray(op(g[i:i + rows]), dtype=np.float64)
                           for i in range(0, len(g), rows)], axis=0)


#: ideal-Gaussian draws per sketch size, and the spacing (in log2 D) of its reference curve
REFERENCE_DRAWS, REFERENCE_STEP = 32, 0.125


def ideal_gaussian_r(g_tr, g_te, log2_dims, *, draws: int = REFERENCE_DRAWS, seed: int = 0,
                     exact=None) -> dict:
    """Pearson r of an ideal dense Gaussian sketch's inner products against the exact ones, on
    these gradients: ``{log2 D: (mean, sd)}`` over ``draws`` simulated sketches (simulated from
    the Gram matrix of train and test gradients, see ``sketchcore.ideal_gaussian``)."""
    from sketchcore.ideal_gaussian import IdealGaussianSketch
    from sketchcore.quality import gram64

    gram = gram64(np.concatenate([g_tr, g_te], axis=0))
    ideal = IdealGaussianSketch(gram)
    n = len(g_tr)
    exact = gram[n:, :n] if exact is None else exact
    rng = np.random.default_rng([seed, 0x6A055])
    out = {}
    for k in log2_dims:
        d = max(1, int(round(2.0 ** k)))
        vals = [_pearson(ideal.gram(d, rng)[n:, :n], exact) for _ in range(draws)]
        out[float(k)] = (float(np.mean(vals)), float(np.std(vals)))
    return out


def equivalent_log2_dim(r: float, curve: dict) -> tuple[float, str]:
    """log2 of the D at which the ideal Gaussian sketch's mean r equals ``r`` (linear in log2 D
    between points of ``curve``); ``("<", lo)`` or ``(">", hi)`` off the curve's ends."""
    ks = np.array(sorted(curve))
    rs = np.maximum.accumulate(np.array([curve[k][0] for k in ks]))  # monotone despite noise
    if not r > rs[0]:
        return float(ks[0]), "<"
    if r >= rs[-1]:
        return float(ks[-1]), ">"
    i = int(np.searchsorted(rs, r))  # rs[i-1] < r <= rs[i]
    lo, hi = rs[i - 1], rs[i]
    t = 0.0 if hi == lo else (r - lo) / (hi - lo)
    return float(ks[i - 1] + t * (ks[i] - ks[i - 1])), "="


@dataclass
class Evaluation:
    """r of sketched vs exact gradient inner products, per algorithm and log2 D (mean over
    seeds), beside an ideal Gaussian sketch on the same gradients, and per layer."""

    num_params: int
    num_train: int
    num_test: int
    seed: int
    seeds: tuple = ()
    sketch_r: dict = field(default_factory=dict)   # algo -> {log2 D: (pearson, spearman)}, means
    seed_r: dict = field(default_factory=dict)     # algo -> {log2 D: [pearson per seed]}
    skipped: dict = field(default_factory=dict)    # algo -> {log2 D: reason}
    layer_r: dict = field(default_factory=dict)    # layer -> (pearson, spearman, size)
    seconds: dict = field(default_factory=dict)    # algo -> {log2 D: seconds to sketch}
    ideal_r: dict = field(default_factory=dict)    # log2 D (fine grid) -> (mean, sd) Pearson
    declared: dict = field(default_factory=dict)   # algo -> {log2 D: its variance_factor}

    def __post_init__(self):
        self.seeds = tuple(self.seeds) or (self.seed,)

    def measured_factor(self, algo: str, k: int) -> tuple[float, str]:
        """``D / D_eq``: how many times the ideal Gaussian's D this algorithm needs for its r at
        ``D = 2^k`` (its variance factor measured on these gradients; ``<``/``>`` bounds where
        r lies off the reference curve), or ``(nan, "")`` without a reference."""
        if not self.ideal_r or k not in self.sketch_r.get(algo, {}):
            return float("nan"), ""
        eq, side = equivalent_log2_dim(self.sketch_r[algo][k][0], self.ideal_r)
        flip = {"<": ">", ">": "<", "=": "="}[side]  # a smaller D_eq is a larger factor
        return float(2.0 ** (k - eq)), flip

    def outliers(self, ratio: float = 2.0) -> list:
        """``(algo, log2 D, measured, declared)`` where the measured variance factor exceeds
        ``ratio`` times the one the algorithm declares (what ``out_dim="auto"`` assumes)."""
        out = []
        for algo, by_k in self.sketch_r.items():
            for k in by_k:
                f, side = self.measured_factor(algo, k)
                dec = self.declared.get(algo, {}).get(k)
                if dec and side in ("=", ">") and f > ratio * dec:
                    out.append((algo, k, f, dec))
        return out

    def to_dict(self) -> dict:
        return {
            "num_params": self.num_params, "num_train": self.num_train,
            "num_test": self.num_test, "pairs": self.num_train * self.num_test,
            "seed": self.seed, "seeds": list(self.seeds),
            "sketch": {a: {str(k): {"pearson": v[0], "spearman": v[1],
                                    "pearson_per_seed": self.seed_r.get(a, {}).get(k),
                                    "measured_factor": self.measured_factor(a, k)[0],
                                    "declared_factor": self.declared.get(a, {}).get(k)}
                           for k, v in d.items()}
                       for a, d in self.sketch_r.items()},
            "ideal_gaussian": {str(k): {"pearson_mean": m, "pearson_sd": sd}
                               for k, (m, sd) in self.ideal_r.items()},
            "skipped": {a: {str(k): v for k, v in d.items()} for a, d in self.skipped.items()},
            "layers": {n: {"pearson": v[0], "spearman": v[1], "size": v[2]}
                       for n, v in self.layer_r.items()},
        }

    def _dims(self) -> list:
        return sorted({k for d in self.sketch_r.values() for k in d}
                      | {k for d in self.skipped.values() for k in d})

    def format_table(self) -> str:
        dims = self._dims()
        seeds = ", ".join(str(s) for s in self.seeds)
        lines = [f"Pearson r / Spearman r of sketched vs exact gradient inner products "
                 f"(N={self.num_params}, {self.num_train} train x {self.num_test} test = "
                 f"{self.num_train * self.num_test} pairs; mean over seeds {seeds})"]
        head = f"{'algo':<7}" + "".join(f"{'log2D=' + str(k):>14}" for k in dims)
        lines += [head, "-" * len(head)]
        for algo in dict.fromkeys([*self.sketch_r, *self.skipped]):  # the order evaluated
            row = f"{algo:<7}"
            for k in dims:
                if k in self.sketch_r.get(algo, {}):
                    p, s = self.sketch_r[algo][k]
                    row += f"{p:>7.3f}/{s:<6.3f}"
                else:
                    row += f"{'-':>14}"
            lines.append(row)
        if self.ideal_r:
            row = f"{'gauss*':<7}"
            for k in dims:
                m = self.ideal_r.get(float(k))
                row += f"{m[0]:>7.3f}+-{m[1]:<4.3f}" if m else f"{'-':>14}"
            lines.append(row)
        for algo, d in self.skipped.items():
            for k, why in d.items():
                lines.append(f"  ({algo}, log2D={k} skipped: {why})")
        if self.ideal_r:
            lines += ["", self.format_reference(dims)]
        if not self.layer_r:
            return "\n".join(lines)
        lines.append("")
        lines.append("layer selection (exact gradient of one layer, no sketch):")
        lines.append(f"{'layer':<50}{'size':>10}{'pearson':>10}{'spearman':>10}")
        for name, (p, s, size) in sorted(self.layer_r.items(), key=lambda kv: -np.nan_to_num(kv[1][0], nan=-2)):
            lines.append(f"{name:<50}{size:>10}{p:>10.3f}{s:>10.3f}")
        best = max((v[0] for v in self.layer_r.values() if not math.isnan(v[0])), default=math.nan)
        lines.append(f"best layer-selection Pearson r: {best:.3f}")
        return "\n".join(lines)

    def format_reference(self, dims=None) -> str:
        """Each algorithm against the ideal Gaussian sketch: the Pearson r range over seeds and
        the measured variance factor D / D_eq (D_eq: the D at which the ideal sketch reaches the
        same mean r), '!' where it exceeds twice the factor the algorithm declares."""
        dims = self._dims() if dims is None else dims
        draws = REFERENCE_DRAWS
        lines = [f"against an ideal Gaussian sketch (gauss*: {draws} draws simulated from the "
                 "Gram matrix of these gradients, mean+-sd): Pearson r min..max over seeds, "
                 "and D/D_eq = the measured variance factor (D_eq: the D at which gauss* "
                 "reaches the same mean r; 1 = as good as a Gaussian); [declared factor]; "
                 "'!' = more than twice the declared factor"]
        head = f"{'algo':<7}" + "".join(f"{'log2D=' + str(k):>27}" for k in dims)
        lines += [head, "-" * len(head)]
        for algo in self.sketch_r:
            row = f"{algo:<7}"
            for k in dims:
                if k not in self.sketch_r[algo]:
                    row += f"{'-':>27}"
                    continue
                rs = self.seed_r.get(algo, {}).get(k) or [self.sketch_r[algo][k][0]]
                f, side = self.measured_factor(algo, k)
                dec = self.declared.get(algo, {}).get(k)
                flag = "!" if dec and side in ("=", ">") and f > 2 * dec else " "
                fac = f"{'' if side == '=' else side}{f:.1f}"
                row += f"{min(rs):>7.3f}..{max(rs):<5.3f} {fac:>6} [{dec or 0:<4.3g}]{flag}"
            lines.append(row)
        return "\n".join(lines)

    def plot(self, path, title: str = "") -> None:
        """r vs log2 D per algorithm (Pearson solid, Spearman dashed), the ideal Gaussian sketch
        as a band (mean +- 2 sd), the best layer as a line."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        dims = self._dims()
        if self.ideal_r:
            lo, hi = (dims[0] - 0.25, dims[-1] + 0.25) if dims else (-np.inf, np.inf)
            ks = [k for k in sorted(self.ideal_r) if lo <= k <= hi]
            m = np.array([self.ideal_r[k][0] for k in ks])
            sd = np.array([self.ideal_r[k][1] for k in ks])
            ax.fill_between(ks, m - 2 * sd, np.minimum(m + 2 * sd, 1.0), color="0.8",
                            label="ideal Gaussian (simulated, +-2 sd)")
            ax.plot(ks, m, color="0.45", lw=1)
        for algo, d in self.sketch_r.items():
            ks = sorted(d)
            line, = ax.plot(ks, [d[k][0] for k in ks], "o-", label=f"{algo} (Pearson)")
            ax.plot(ks, [d[k][1] for k in ks], "x--", color=line.get_color(), alpha=0.6)
        if self.layer_r:
            name, (p, _s, _n) = max(self.layer_r.items(),
                                    key=lambda kv: np.nan_to_num(kv[1][0], nan=-2))
            ax.axhline(p, color="gray", ls=":", label=f"best layer: {name} ({p:.2f})")
        if dims:
            ax.set_xlim(dims[0] - 0.25, dims[-1] + 0.25)
        ax.set_xlabel("log2 D")
        ax.set_ylabel("r vs exact inner products")
        ax.set_title(title or f"sketched gradient inner products, N={self.num_params}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _variants(algos, sketch_options):
    """``(label, algo, options)`` per entry of ``algos`` (a name, or such a triple)."""
    import sketchcore as sk

    out = []
    for entry in algos:
        label, algo, opts = (entry, entry, None) if isinstance(entry, str) else entry
        out.append((label, algo, dict(opts if opts is not None else sketch_options.get(algo, {}))))
    unknown = sorted({a for _l, a, _o in out} - set(sk.algorithms()))
    if unknown:
        raise ValueError(f"unknown algorithms {unknown}; allowed: {sk.algorithms()}.")
    return out


def evaluate_gradients(g_tr, g_te, *, algos=DEFAULT_ALGOS, log2_dims=(6, 8, 10, 12),
                       seeds=(0,), sketch_options=None, reference: bool = True,
                       progress: bool = True) -> Evaluation:
    """Sketched vs exact inner products of given gradients ``g_tr`` (n, N) and ``g_te`` (m, N).

    ``algos``: algorithm names, or ``(label, algo, options)`` triples for variants of one
    algorithm. Every (algorithm, D) is sketched with each seed of ``seeds``; ``reference`` adds
    the ideal Gaussian sketch on the same Gram matrix and each algorithm's measured variance
    factor against it (``Evaluation.format_reference``, ``Evaluation.outliers``).
    """
    import time

    import sketchcore as sk
    from sketchcore.quality import gram64
    from sketchcore.registry import registry

    variants = _variants(algos, sketch_options or {})
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed, e.g. seeds=(0, 1, 2).")
    n_params = g_tr.shape[1]
    exact = gram64(g_te, g_tr)
    result = Evaluation(n_params, len(g_tr), len(g_te), seeds[0], seeds)
    classes = registry().algorithms
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(variants) * len(log2_dims), desc="sketch configs", unit="cfg")
    for label, algo, opts in variants:
        for k in log2_dims:
            d = 2 ** int(k)
            try:
                if algo == "dense" and d * n_params > DENSE_MAX_ENTRIES:
                    raise ValueError(f"D*N={d * n_params} > {DENSE_MAX_ENTRIES} (too slow here)")
                per_seed, t0 = [], time.perf_counter()
                for s in seeds:
                    op = sk.Sketch(algo=algo, in_dim=n_params, out_dim=d, seed=s, **opts)
                    s_tr, s_te = _sketch_rows(op, g_tr), _sketch_rows(op, g_te)
                    per_seed.append(_corr(s_te @ s_tr.T, exact))
                result.seconds.setdefault(label, {})[k] = (time.perf_counter() - t0) / len(seeds)
                result.sketch_r.setdefault(label, {})[k] = tuple(
                    float(np.mean([v[i] for v in per_seed])) for i in (0, 1))
                result.seed_r.setdefault(label, {})[k] = [v[0] for v in per_seed]
                result.declared.setdefault(label, {})[k] = float(classes[algo].variance_factor_at(d))
            except (ValueError, sk.SketchcoreError) as err:
                result.skipped.setdefault(label, {})[k] = str(err).split(";")[0]
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if reference and log2_dims:
        lo, hi = min(log2_dims) - 6, max(log2_dims) + 2
        grid = sorted(set(np.arange(max(lo, 0), hi + 1e-9, REFERENCE_STEP).round(4).tolist())
                      | {float(k) for k in log2_dims})
        result.ideal_r = ideal_gaussian_r(g_tr, g_te, grid, seed=seeds[0])
    return result


def evaluate(gs, train, test, *, algos=DEFAULT_ALGOS, log2_dims=(6, 8, 10, 12), seed: int = 0,
             seeds=None, layers: str = "module", batch_size: int = 16, sketch_options=None,
             reference: bool = True, progress: bool = True, gradients=None) -> Evaluation:
    """Exact vs sketched gradient inner products on ``train`` x ``test`` (arrays).

    ``gs``: a ``GradientSketcher`` (its sketch is not used; only ``full_gradients`` and the
    parameter names/shapes). ``seeds``: the sketch seeds to average over (default ``(seed,)``).
    ``sketch_options``: per-algorithm keyword options (e.g. ``{"affd": {"preconditioner":
    "fft"}}``). ``gradients``: ``(g_train, g_test)`` already taken with ``exact_gradients`` (then
    ``train``/``test`` are not read). The rest: ``evaluate_gradients``.
    """
    _variants(algos, sketch_options or {})  # bad names fail before the gradients are taken
    if gradients is None:
        g_tr = exact_gradients(gs, train, batch_size=batch_size)
        g_te = exact_gradients(gs, test, batch_size=batch_size)
    else:
        g_tr, g_te = gradients
    result = evaluate_gradients(g_tr, g_te, algos=algos, log2_dims=log2_dims,
                                seeds=(seed,) if seeds is None else seeds,
                                sketch_options=sketch_options, reference=reference,
                                progress=progress)
    if layers:
        from sketchcore.quality import gram64

        exact = gram64(g_te, g_tr)
        for name, cols in layer_groups(gs.param_names, gs.param_shapes, by=layers).items():
            est = g_te[:, cols].astype(np.float64) @ g_tr[:, cols].T.astype(np.float64)
            p, s = _corr(est, exact)
            result.layer_r[name] = (p, s, int(len(cols)))
    return result
