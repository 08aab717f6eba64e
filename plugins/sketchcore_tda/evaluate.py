"""Sketched gradient inner products against exact ones, and the layer-selection baseline.

On a model small enough for full per-example gradients: ``G_train`` (n, N) and ``G_test`` (m, N)
give the exact scores ``G_test G_train^T`` (n*m pairs; the paper uses 2^12). For every algorithm
and sketch dimension D the same gradients are sketched with ``Phi`` (explicit, flat: the paper's
setting) and the Pearson and Spearman r of the sketched against the exact scores are reported.
The baseline restricts the gradient to one layer (module) at a time, with no sketch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["evaluate", "Evaluation", "exact_gradients", "layer_groups", "DEFAULT_ALGOS"]

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


def _sketch_rows(op, g, rows: int = 16):
    return np.concatenate([np.asarray(op(g[i:i + rows]), dtype=np.float64)
                           for i in range(0, len(g), rows)], axis=0)


@dataclass
class Evaluation:
    """r of sketched vs exact gradient inner products, per algorithm and log2 D, and per layer."""

    num_params: int
    num_train: int
    num_test: int
    seed: int
    sketch_r: dict = field(default_factory=dict)   # algo -> {log2 D: (pearson, spearman)}
    skipped: dict = field(default_factory=dict)    # algo -> {log2 D: reason}
    layer_r: dict = field(default_factory=dict)    # layer -> (pearson, spearman, size)
    seconds: dict = field(default_factory=dict)    # algo -> {log2 D: seconds to sketch}

    def to_dict(self) -> dict:
        return {
            "num_params": self.num_params, "num_train": self.num_train,
            "num_test": self.num_test, "pairs": self.num_train * self.num_test,
            "seed": self.seed,
            "sketch": {a: {str(k): {"pearson": v[0], "spearman": v[1]} for k, v in d.items()}
                       for a, d in self.sketch_r.items()},
            "skipped": {a: {str(k): v for k, v in d.items()} for a, d in self.skipped.items()},
            "layers": {n: {"pearson": v[0], "spearman": v[1], "size": v[2]}
                       for n, v in self.layer_r.items()},
        }

    def format_table(self) -> str:
        dims = sorted({k for d in self.sketch_r.values() for k in d}
                      | {k for d in self.skipped.values() for k in d})
        lines = [f"Pearson r / Spearman r of sketched vs exact gradient inner products "
                 f"(N={self.num_params}, {self.num_train} train x {self.num_test} test = "
                 f"{self.num_train * self.num_test} pairs, seed {self.seed})"]
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
        for algo, d in self.skipped.items():
            for k, why in d.items():
                lines.append(f"  ({algo}, log2D={k} skipped: {why})")
        lines.append("")
        lines.append("layer selection (exact gradient of one layer, no sketch):")
        lines.append(f"{'layer':<50}{'size':>10}{'pearson':>10}{'spearman':>10}")
        for name, (p, s, size) in sorted(self.layer_r.items(), key=lambda kv: -np.nan_to_num(kv[1][0], nan=-2)):
            lines.append(f"{name:<50}{size:>10}{p:>10.3f}{s:>10.3f}")
        if self.layer_r:
            best = max(v[0] for v in self.layer_r.values() if not math.isnan(v[0]))
            lines.append(f"best layer-selection Pearson r: {best:.3f}")
        return "\n".join(lines)

    def plot(self, path, title: str = "") -> None:
        """r vs log2 D per algorithm (Pearson solid, Spearman dashed); best layer as a line."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for algo, d in self.sketch_r.items():
            ks = sorted(d)
            line, = ax.plot(ks, [d[k][0] for k in ks], "o-", label=f"{algo} (Pearson)")
            ax.plot(ks, [d[k][1] for k in ks], "x--", color=line.get_color(), alpha=0.6)
        if self.layer_r:
            name, (p, _s, _n) = max(self.layer_r.items(),
                                    key=lambda kv: np.nan_to_num(kv[1][0], nan=-2))
            ax.axhline(p, color="gray", ls=":", label=f"best layer: {name} ({p:.2f})")
        ax.set_xlabel("log2 D")
        ax.set_ylabel("r vs exact inner products")
        ax.set_title(title or f"sketched gradient inner products, N={self.num_params}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def evaluate(gs, train, test, *, algos=DEFAULT_ALGOS, log2_dims=(6, 8, 10, 12), seed: int = 0,
             layers: str = "module", batch_size: int = 16, sketch_options=None,
             progress: bool = True) -> Evaluation:
    """Exact vs sketched gradient inner products on ``train`` x ``test`` (arrays).

    ``gs``: a ``GradientSketcher`` (its sketch is not used; only ``full_gradients`` and the
    parameter names/shapes). ``sketch_options``: per-algorithm keyword options
    (e.g. ``{"affd": {"preconditioner": "fft"}}``).
    """
    import sketchcore as sk

    sketch_options = sketch_options or {}
    unknown = sorted(set(algos) - set(sk.algorithms()))
    if unknown:
        raise ValueError(f"unknown algorithms {unknown}; allowed: {sk.algorithms()}.")
    g_tr = exact_gradients(gs, train, batch_size=batch_size)
    g_te = exact_gradients(gs, test, batch_size=batch_size)
    n_params = g_tr.shape[1]
    exact = g_te.astype(np.float64) @ g_tr.T.astype(np.float64)
    result = Evaluation(n_params, len(g_tr), len(g_te), seed)

    configs = [(a, k) for a in algos for k in log2_dims]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(configs), desc="sketch configs", unit="cfg")
    import time

    for algo, k in configs:
        d = 2 ** int(k)
        try:
            if algo == "dense" and d * n_params > DENSE_MAX_ENTRIES:
                raise ValueError(f"D*N={d * n_params} > {DENSE_MAX_ENTRIES} (too slow here)")
            op = sk.Sketch(algo=algo, in_dim=n_params, out_dim=d, seed=seed,
                           **sketch_options.get(algo, {}))
            t0 = time.perf_counter()
            s_tr, s_te = _sketch_rows(op, g_tr), _sketch_rows(op, g_te)
            result.seconds.setdefault(algo, {})[k] = time.perf_counter() - t0
            result.sketch_r.setdefault(algo, {})[k] = _corr(s_te @ s_tr.T, exact)
        except (ValueError, sk.SketchcoreError) as err:
            result.skipped.setdefault(algo, {})[k] = str(err).split(";")[0]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if layers:
        for name, cols in layer_groups(gs.param_names, gs.param_shapes, by=layers).items():
            est = g_te[:, cols].astype(np.float64) @ g_tr[:, cols].T.astype(np.float64)
            p, s = _corr(est, exact)
            result.layer_r[name] = (p, s, int(len(cols)))
    return result
