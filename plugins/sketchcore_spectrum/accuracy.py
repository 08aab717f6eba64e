"""Accuracy of sketched eigenvalues against exact ones (the paper's Table 7), plus the
layer-selection baseline (the top eigenvalues of one layer's Hessian block).

Error measure: the relative mean absolute error of the top-k eigenvalues,
``mean_i |lambda_hat_i - lambda_i| / |lambda_i|``, with both lists sorted descending.
Reference: ``eigh`` of the exact Hessian for ``N <= 3000``, else unsketched Lanczos with full
re-orthogonalization on exact HVPs (``hvp_full_operator``).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sketchcore import InvalidOptionError

__all__ = ["relative_error", "reference_spectrum", "accuracy_study", "AccuracyStudy",
           "EIGH_MAX_PARAMS"]

EIGH_MAX_PARAMS = 3000
REFERENCES = ("auto", "eigh", "lanczos")


def relative_error(estimate, reference) -> float:
    """``mean_i |estimate_i - reference_i| / |reference_i|`` over the common length."""
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    k = min(est.size, ref.size)
    if k == 0:
        raise InvalidOptionError("relative_error needs at least one eigenvalue in each list.")
    return float(np.mean(np.abs(est[:k] - ref[:k]) / np.abs(ref[:k])))


def reference_spectrum(gs, batches, k: int, *, method: str = "auto", max_iter: int | None = None,
                       tol: float = 1e-8, seed: int = 0, converge_on: str = "both",
                       progress: bool = False) -> dict:
    """Exact top-k and bottom-k eigenvalues of the Hessian of ``gs`` (a ``GradientSketcher``;
    its sketch is not used): ``eigh`` of ``gs.hessian`` or Lanczos on ``gs.hvp_full_operator``.

    Returns a dict with ``top``, ``bottom``, ``method``, ``seconds``, ``num_iter``,
    ``krylov_nbytes`` and the max Ritz residual (0 for eigh).
    """
    from .lanczos import extreme_eigenpairs

    if method not in REFERENCES:
        raise InvalidOptionError(f"reference method must be one of {REFERENCES}, got {method!r}.")
    n = gs.num_params
    if method == "auto":
        method = "eigh" if n <= EIGH_MAX_PARAMS else "lanczos"
    t0 = time.perf_counter()
    if method == "eigh":
        H = gs.hessian(batches)
        ev = np.linalg.eigvalsh((H + H.T) / 2)
        return {"top": ev[::-1][:k].copy(), "bottom": ev[:k].copy(), "method": "eigh",
                "seconds": time.perf_counter() - t0, "num_iter": None,
                "krylov_nbytes": 0, "max_residual": 0.0, "num_params": n}
    res = extreme_eigenpairs(gs.hvp_full_operator(batches), n, k,
                             max_iter=max_iter or min(n, 8 * k + 40), tol=tol, seed=seed,
                             converge_on=converge_on, progress=progress)
    return {"top": res.top, "bottom": res.bottom, "method": "lanczos",
            "seconds": time.perf_counter() - t0, "num_iter": res.num_iter,
            "krylov_nbytes": res.krylov_nbytes, "krylov_vectors": res.krylov_vectors,
            "converged": res.converged,
            "max_residual": float(max(res.top_residuals.max(), res.bottom_residuals.max())),
            "num_params": n}


@dataclass
class AccuracyStudy:
    """Relative top-k errors per (algorithm, D) and per layer block, against ``reference``."""

    k: int
    num_params: int
    reference: dict
    rows: list = field(default_factory=list)  # algo, dim, seed, rel_error, top, seconds, ...
    layer_rows: list = field(default_factory=list)  # layer, n_layer, rel_error, top

    def errors(self) -> dict:
        """``{algo: {D: mean rel_error over sketch seeds}}``."""
        out: dict = {}
        for r in self.rows:
            out.setdefault(r["algo"], {}).setdefault(r["dim"], []).append(r["rel_error"])
        return {a: {d: float(np.mean(v)) for d, v in sorted(ds.items())} for a, ds in out.items()}

    def min_log2_dim(self, thresholds=(0.2, 0.1, 0.05)) -> dict:
        """``{algo: [smallest log2 D with error < t, for t in thresholds]}`` (None: not reached
        at any D tried), the layout of the paper's Table 7."""
        out = {}
        for algo, by_dim in self.errors().items():
            out[algo] = [next((int(math.log2(d)) for d, e in by_dim.items() if e < t), None)
                         for t in thresholds]
        return out

    def table(self, thresholds=(0.2, 0.1, 0.05)) -> str:
        """Error grid (rows: algorithms; columns: log2 D), the Table-7 summary, the layer rows."""
        errs = self.errors()
        dims = sorted({d for by in errs.values() for d in by})
        ref = self.reference
        lines = [f"relative mean abs. error of the top-{self.k} Hessian eigenvalues "
                 f"(N = {self.num_params}, reference: {ref['method']})",
                 f"{'algo':<8}" + "".join(f"{'2^' + str(int(math.log2(d))):>9}" for d in dims)]
        for algo, by in errs.items():
            lines.append(f"{algo:<8}" + "".join(
                f"{by[d]:>9.4f}" if d in by else f"{'':>9}" for d in dims))
        lines.append("")
        lines.append("min log2 D for err < " + " / ".join(str(t) for t in thresholds) + ":")
        for algo, mins in self.min_log2_dim(thresholds).items():
            lines.append(f"  {algo:<8}" + " / ".join("-" if m is None else str(m) for m in mins))
        if self.layer_rows:
            lines.append("")
            lines.append("layer-selection baseline (top eigenvalues of one layer's Hessian block):")
            for r in self.layer_rows:
                lines.append(f"  {r['layer']:<32} n={r['n_layer']:<8} err {r['rel_error']:.4f}")
        lines.append("")
        lines.append("reference top eigenvalues: " + ", ".join(f"{x:.4g}" for x in ref["top"]))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        def plain(x):
            if isinstance(x, np.ndarray):
                return x.tolist()
            if isinstance(x, (np.floating, np.integer)):
                return x.item()
            return x
        d = asdict(self)
        d["reference"] = {k: plain(v) for k, v in self.reference.items()}
        d["rows"] = [{k: plain(v) for k, v in r.items()} for r in self.rows]
        d["layer_rows"] = [{k: plain(v) for k, v in r.items()} for r in self.layer_rows]
        d["min_log2_dim"] = self.min_log2_dim()
        return d

    def write_json(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    def plot(self, path) -> Path:
        from .plots import plot_accuracy

        return plot_accuracy(self, path)


@contextmanager
def _peak_memory(enabled: bool):
    """Yield a dict whose ``bytes`` is set to the tracemalloc peak of the block (None if off)."""
    import tracemalloc

    out = {"bytes": None}
    if not enabled:
        yield out
        return
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield out
    finally:
        out["bytes"] = tracemalloc.get_traced_memory()[1] - base
        if started:
            tracemalloc.stop()


def default_layers(names: list[str], count: int = 3) -> list[str]:
    """Module prefixes of the first, middle and last parameter tensors (layer-baseline default)."""
    mods = []
    for n in names:
        m = n.rsplit(".", 1)[0] + "." if "." in n else n
        if m not in mods:
            mods.append(m)
    if len(mods) <= count:
        return mods
    idx = sorted({round(i * (len(mods) - 1) / (count - 1)) for i in range(count)})
    return [mods[i] for i in idx]


def accuracy_study(model, loss_fn, batches, *, algos=("affd", "afjl", "qk"),
                   dims=(2**8, 2**9, 2**10, 2**11, 2**12), k: int = 10, sketch_seeds=(0,),
                   reference: str = "auto", layers=None, max_iter: int | None = None,
                   tol: float = 1e-6, seed: int = 0, params=None, forward=None,
                   reference_result: dict | None = None, reference_max_iter: int | None = None,
                   measure_memory: bool = False, progress: bool = True) -> AccuracyStudy:
    """Sketched top-k eigenvalues for every ``algo x D x sketch seed`` against the exact ones,
    and the layer-selection baseline for each prefix in ``layers`` (None: first, middle and
    last module; ``[]``: none). ``reference_result`` reuses a ``reference_spectrum`` dict.
    ``measure_memory`` records each run's peak of host memory traced by ``tracemalloc`` (numpy
    and Python objects: the Krylov basis, sketch parameters, N-vectors in flight; not torch's
    own tensors) as ``peak_traced_bytes``."""
    from sketchcore.gradients import GradientSketcher

    from .lanczos import extreme_eigenpairs

    batches = list(batches)
    exact = GradientSketcher(model, loss_fn, sketch=None, params=params, forward=forward)
    n = exact.num_params
    with _peak_memory(measure_memory) as peak:
        ref = reference_result or reference_spectrum(
            exact, batches, k, method=reference, seed=seed, max_iter=reference_max_iter,
            converge_on="top", progress=progress)
    if measure_memory and reference_result is None:
        ref = {**ref, "peak_traced_bytes": peak["bytes"]}
    study = AccuracyStudy(k=k, num_params=n, reference=ref)
    jobs = [(a, d, s) for a in algos for d in dims for s in sketch_seeds]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs) + len(layers or []), desc="accuracy study", unit="run")
    try:
        for algo, d, s in jobs:
            if d > n:
                raise InvalidOptionError(
                    f"D={d} exceeds N={n}; pick dims below the parameter count.")
            gs = GradientSketcher(model, loss_fn, sketch={"algo": algo, "out_dim": d, "seed": s},
                                  params=params, forward=forward)
            t0 = time.perf_counter()
            with _peak_memory(measure_memory) as peak:
                res = extreme_eigenpairs(gs.hvp_operator(batches), d, min(k, d),
                                         max_iter=max_iter or min(d, 4 * k + 20), tol=tol,
                                         seed=seed, converge_on="top")
            study.rows.append({"algo": algo, "dim": d, "sketch_seed": s,
                               "rel_error": relative_error(res.top, ref["top"]),
                               "top": res.top, "num_iter": res.num_iter,
                               "max_residual": float(res.top_residuals.max()),
                               "krylov_nbytes": res.krylov_nbytes,
                               "krylov_vectors": res.krylov_vectors,
                               "peak_traced_bytes": peak["bytes"],
                               "seconds": time.perf_counter() - t0})
            if bar is not None:
                bar.update(1)
        if layers is None:
            layers = default_layers(exact.param_names)
        for layer in layers:
            patterns = [f"{layer}*"]
            gl = GradientSketcher(model, loss_fn, sketch=None, params=patterns, forward=forward)
            nl = gl.num_params
            if nl <= EIGH_MAX_PARAMS:
                top = np.linalg.eigvalsh(gl.hessian(batches))[::-1][:k]
            else:
                top = extreme_eigenpairs(gl.hvp_operator(batches), nl, min(k, nl),
                                         max_iter=max_iter or min(nl, 4 * k + 20), tol=tol,
                                         seed=seed, converge_on="top").top
            study.layer_rows.append({"layer": layer, "n_layer": nl,
                                     "rel_error": relative_error(top, ref["top"]), "top": top})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return study
