"""SJLT and SRHT beside the paper's sketches; the evidence behind ``out_dim="auto"``; and
``sketchcore.sklearn.SketchProjection`` beside scikit-learn's random projections.

Parts (``--parts``, comma-separated; default all):

- ``time``: median ms of one float32 vector, (a) against D at N = 2^22 and (b) against N at
  D = 2^12, for fjl, affd, afjl, qk, sjlt and srht on the default CPU backend for numpy arrays
  (numba when installed) and on torch CPU tensors; operator build time and Phi^T beside.
- ``accuracy``: Pearson r of sketched vs exact per-example gradient inner products (64 train x 64
  test = 4096 pairs, as ``bench_tda.py``) against log2 D on the GPT-2 config and MiniLM, for the
  paper's sketches (fjl, affd, afjl, qk) and sjlt (nnz_per_col 1, 4, 8) and srht; minimum log2 D
  per threshold beside the paper's Table 6.
- ``calibration``: each algorithm's measured ``variance_factor`` (the variance of its relative
  error of norms / pairwise inner products over that of a dense Gaussian sketch, 3 seeds) on the
  same gradients and on synthetic vectors (Gaussian, heavy-tailed, low-rank), next to the value
  ``out_dim="auto"`` uses.
- ``sklearn``: SketchProjection (affd, srht, sjlt) against ``GaussianRandomProjection`` and
  ``SparseRandomProjection`` at equal n_components: fit and transform time, peak extra memory
  (fresh process per case), and distortion of norms and pairwise inner products.

    python benchmarks/bench_sketches_extra.py [--quick] [--parts time,accuracy,calibration,sklearn]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import sketchcore as sk

PAPER = ("fjl", "affd", "afjl", "qk")
#: (label, algo, options) of the accuracy and calibration rows
VARIANTS = [("fjl", "fjl", {}), ("affd", "affd", {}), ("afjl", "afjl", {}), ("qk", "qk", {}),
            ("sjlt", "sjlt", {}), ("sjlt-s1", "sjlt", {"nnz_per_col": 1}),
            ("sjlt-s8", "sjlt", {"nnz_per_col": 8}), ("srht", "srht", {})]
#: the calibration also covers the baselines (dense only where N D stays small: it regenerates
#: its Gaussian matrix at every call)
CALIBRATED = [("dense", "dense", {}), ("ffd", "ffd", {}), *VARIANTS]
DENSE_MAX_ENTRIES = 1 << 30
#: the paper's Table 6 (GPT-2): minimum log2 D for Pearson r > 0.95 / 0.98 / 0.99
PAPER_TABLE6 = {"fjl": (10, 12, 13), "affd": (10, 12, 13), "afjl": (12, 13, 15),
                "qk": (14, 16, 17)}
THRESHOLDS = (0.95, 0.98, 0.99)


def load_line() -> str:
    try:
        return f"load average {os.getloadavg()[0]:.1f} (1 min)"
    except OSError:
        return "load average unknown"


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up: parameters moved, JIT compiled
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


# ---- time ------------------------------------------------------------------------------------
def time_part(quick: bool, repeat: int) -> None:
    usable = {b.name for b in sk.backends() if b.usable}
    routes = []
    default = sk.resolve_backend(None, np.zeros(1, dtype=np.float32)).name
    routes.append((f"{default} (numpy arrays)", None, lambda a: a))
    if "torch" in usable:
        import torch

        routes.append(("torch (CPU tensors)", "torch", torch.from_numpy))
    algos = [*PAPER, "sjlt", "srht"]
    log_n = 18 if quick else 22
    dims = [10, 12, 14] if quick else [10, 12, 14, 16, 18]
    print(f"\n## (a) time against D at N = 2^{log_n}, one float32 vector (median of {repeat} ms; "
          f"{load_line()})")
    print("# build: constructing the operator (host parameters), once; Phi^T: the transpose at "
          "the largest D")
    n = 1 << log_n
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    head = f"{'route':<22} {'algo':<5}" + "".join(f"{'2^' + str(k):>9}" for k in dims)
    print(head + f"{'max/min':>9}{'build s':>9}{'Phi^T':>9}")
    for label, backend, conv in routes:
        xb = conv(x)
        for algo in algos:
            row, build = [], 0.0
            op = None
            for k in dims:
                t0 = time.perf_counter()
                op = sk.Sketch(algo=algo, in_dim=n, out_dim=1 << k, seed=0)
                build = time.perf_counter() - t0
                row.append(median_ms(lambda: op.apply(xb, backend=backend), repeat))
            yb = conv(np.ones(op.out_dim, dtype=np.float32))
            tt = median_ms(lambda: op.transpose(yb, backend=backend), repeat)
            print(f"{label:<22} {algo:<5}" + "".join(f"{t:>9.1f}" for t in row) +
                  f"{row[-1] / row[0]:>9.2f}{build:>9.2f}{tt:>9.1f}", flush=True)
    log_ns = [16, 18] if quick else [18, 20, 22, 24]
    print(f"\n## (b) time against N at D = 2^12, one float32 vector (median of {repeat} ms; "
          f"{load_line()})")
    print(f"{'route':<22} {'algo':<5}" + "".join(f"{'2^' + str(k):>9}" for k in log_ns) +
          f"{'slope':>7}")
    for label, backend, conv in routes:
        for algo in algos:
            row = []
            for k in log_ns:
                xk = conv(np.random.default_rng(k).standard_normal(1 << k).astype(np.float32))
                op = sk.Sketch(algo=algo, in_dim=1 << k, out_dim=1 << 12, seed=0)
                row.append(median_ms(lambda: op.apply(xk, backend=backend), repeat))
                del op
            slope = np.polyfit(log_ns, np.log2(row), 1)[0]
            print(f"{label:<22} {algo:<5}" + "".join(f"{t:>9.1f}" for t in row) +
                  f"{slope:>7.2f}", flush=True)
    print("# slope: log-log slope of time against N (1 = linear)")


# ---- accuracy and calibration ----------------------------------------------------------------
def gradients(name: str, n_train: int, n_test: int):
    from sketchcore_tda import example_tasks
    from sketchcore_tda.evaluate import exact_gradients
    from sketchcore_tda.sources import as_source
    from sketchcore_tda.task_spec import make_sketcher

    t0 = time.perf_counter()
    task = (example_tasks.tiny_gpt2(steps=300, n_train=512, n_test=n_test) if name == "gpt2"
            else example_tasks.minilm(n_train=n_train, n_test=n_test))
    gs = make_sketcher(task, None)
    g_tr = exact_gradients(gs, as_source(task.train).subset(0, n_train).arrays)
    g_te = exact_gradients(gs, as_source(task.test).subset(0, n_test).arrays)
    print(f"\n== {name}: N = {g_tr.shape[1]}, {n_train} train x {n_test} test "
          f"({time.perf_counter() - t0:.0f} s to train and take gradients)", flush=True)
    return g_tr, g_te


def pearson_table(g_tr, g_te, log_dims) -> dict:
    from scipy.stats import pearsonr

    from sketchcore.quality import gram64

    exact = gram64(g_te, g_tr).ravel()
    res = {}
    print(f"Pearson r of sketched vs exact gradient inner products (seed 0; {load_line()})")
    print(f"{'algo':<8}" + "".join(f"{'2^' + str(k):>7}" for k in log_dims))
    for label, algo, opts in VARIANTS:
        res[label] = {}
        for k in log_dims:
            op = sk.Sketch(algo=algo, in_dim=g_tr.shape[1], out_dim=1 << k, seed=0, **opts)
            s_tr = np.asarray(op(g_tr), dtype=np.float64)
            s_te = np.asarray(op(g_te), dtype=np.float64)
            res[label][k] = float(pearsonr((s_te @ s_tr.T).ravel(), exact)[0])
        print(f"{label:<8}" + "".join(f"{res[label][k]:>7.3f}" for k in log_dims), flush=True)
    head = "  ".join(f"r>{t:g}" for t in THRESHOLDS)
    print(f"\nminimum log2 D (on this grid) with Pearson r above each threshold:")
    print(f"{'algo':<8} ours: {head}    paper (GPT-2, Table 6): {head}")
    for label, by_dim in res.items():
        ours = []
        for t in THRESHOLDS:
            hit = next((k for k in log_dims if by_dim[k] > t), None)
            ours.append(str(hit) if hit is not None else f">{log_dims[-1]}")
        paper = PAPER_TABLE6.get(label, ("-",) * 3)
        print(f"{label:<8}      " + "  ".join(f"{v:>6}" for v in ours) + " " * 28 +
              "  ".join(f"{v:>6}" for v in paper))
    return res


def calibration_table(vectors: dict, log_dims, seeds: int) -> dict:
    from sketchcore.quality import calibrate
    from sketchcore.registry import registry

    print(f"\nmeasured variance_factor: mean squared relative error / a dense Gaussian sketch's, "
          f"norms/pairs, {seeds} seeds; 'used' = the value out_dim='auto' assumes at that D")
    names = list(vectors)
    out = {}
    print(f"{'algo':<8} {'D':>6} " + "".join(f"{n:>16}" for n in names) + f"{'used':>8}")
    for label, algo, opts in CALIBRATED:
        cls = registry().algorithms[algo]
        for k in log_dims:
            d = 1 << k
            cells = []
            for name in names:
                if algo == "dense" and d * vectors[name].shape[1] > DENSE_MAX_ENTRIES:
                    cells.append("-")
                    continue
                norm_f, pair_f = calibrate(vectors[name], algo, [d], seeds=seeds, **opts)[d]
                out.setdefault(label, {}).setdefault(name, {})[d] = (norm_f, pair_f)
                cells.append(f"{norm_f:.2f}/{pair_f:.2f}")
            print(f"{label:<8} {d:>6} " + "".join(f"{c:>16}" for c in cells) +
                  f"{cls.variance_factor_at(d):>8.2f}", flush=True)
    return out


def synthetic(n: int, dim: int) -> dict:
    rng = np.random.default_rng(0)
    side = 1 << ((dim.bit_length() - 1) // 2)
    low = np.stack([np.outer(rng.standard_normal(side), rng.standard_normal(dim // side)).ravel()
                    for _ in range(n)])
    return {"gaussian": rng.standard_normal((n, dim)), "student-t(2)": rng.standard_t(2, (n, dim)),
            "rank-1": low}


def accuracy_part(quick: bool, parts: set) -> dict:
    results = {}
    seeds = 2 if quick else 3
    for name in ("gpt2", "minilm"):
        if quick and name == "minilm":
            continue
        g_tr, g_te = gradients(name, 64, 64)
        if "accuracy" in parts:
            dims = list(range(6, 13)) if quick else list(range(6, 17))
            if name == "minilm":
                dims = [d for d in dims if d >= 7]
            results[f"{name}/r"] = pearson_table(g_tr, g_te, dims)
        if "calibration" in parts:
            vecs = {f"{name} grads": np.concatenate([g_tr, g_te])[:64]}
            results[f"{name}/calibration"] = calibration_table(
                vecs, [8, 10] if quick else [8, 10, 12], seeds)
        del g_tr, g_te
        gc.collect()
    if "calibration" in parts:
        print("\n== synthetic vectors, N = 2^14 (64 each)")
        results["synthetic/calibration"] = calibration_table(
            synthetic(64, 1 << 14), [8, 10] if quick else [8, 10, 12], seeds)
    return results


# ---- scikit-learn ----------------------------------------------------------------------------
_SKLEARN_CHILD = r'''
import json, resource, sys, time
import numpy as np
spec = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
n, dim, d = spec["n"], spec["dim"], spec["d"]
x = (rng.standard_normal((n, 16)) @ rng.standard_normal((16, dim))
     + rng.standard_normal((n, dim))).astype(np.float32)
if spec["kind"] == "sketchcore":
    from sketchcore.sklearn import SketchProjection
    make = lambda: SketchProjection(n_components=d, algo=spec["algo"], random_state=0)
    SketchProjection(n_components=8, algo=spec["algo"], random_state=0).fit(x[:2]).transform(x[:2])
else:
    from sklearn import random_projection as rp
    cls = getattr(rp, spec["kind"])
    make = lambda: cls(n_components=d, random_state=0)
def status(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(field + ":"))
try:  # reset the high-water mark, so the data's temporaries do not hide the estimator's peak
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = status("VmRSS")
    hwm = lambda: status("VmHWM")
except OSError:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter(); est = make().fit(x); t_fit = time.perf_counter() - t0
t0 = time.perf_counter(); y = est.transform(x); t_tr = time.perf_counter() - t0
peak = hwm()
t0 = time.perf_counter(); y = est.transform(x); t_tr2 = time.perf_counter() - t0
if hasattr(y, "toarray"):
    y = y.toarray()
y = np.asarray(y, dtype=np.float64)
x64 = x.astype(np.float64)
g, gs = x64 @ x64.T, y @ y.T
nrm = np.sqrt(np.diag(g))
iu = np.triu_indices(n, 1)
pair = np.abs(gs - g)[iu] / (nrm[iu[0]] * nrm[iu[1]])
norm = np.abs(np.diag(gs) / np.diag(g) - 1)
print(json.dumps({"fit": t_fit, "transform": min(t_tr, t_tr2), "extra_mib": (peak - base) / 1024,
                  "norm_max": float(norm.max()), "pair_max": float(pair.max()),
                  "pair_p95": float(np.quantile(pair, 0.95)),
                  "r": float(np.corrcoef(gs[iu], g[iu])[0, 1])}))
'''


def sklearn_part(quick: bool) -> dict:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("\n(sklearn part skipped: scikit-learn is not installed)")
        return {}
    n, dim = (200, 1 << 13) if quick else (500, 1 << 15)
    dims = [256, 1024] if quick else [256, 1024, 4096]
    print(f"\n## SketchProjection vs scikit-learn, {n} samples x {dim} features (float32, 16 "
          f"latent directions + noise), equal n_components; a fresh process per case "
          f"({load_line()})")
    print("# fit/transform: seconds (transform: the faster of two calls); extra MiB: rise of the "
          "resident high-water mark during fit + first transform; distortion as in "
          "sketchcore.quality (relative to |x||y|)")
    print(f"{'estimator':<30} {'D':>5} {'fit s':>8} {'transform s':>12} {'extra MiB':>10} "
          f"{'norm max':>9} {'pair max':>9} {'pair p95':>9} {'r':>7}")
    cases = [("SketchProjection(affd)", {"kind": "sketchcore", "algo": "affd"}),
             ("SketchProjection(srht)", {"kind": "sketchcore", "algo": "srht"}),
             ("SketchProjection(sjlt)", {"kind": "sketchcore", "algo": "sjlt"}),
             ("GaussianRandomProjection", {"kind": "GaussianRandomProjection"}),
             ("SparseRandomProjection", {"kind": "SparseRandomProjection"})]
    out = {}
    for d in dims:
        for label, spec in cases:
            spec = {**spec, "n": n, "dim": dim, "d": d}
            proc = subprocess.run([sys.executable, "-c", _SKLEARN_CHILD, json.dumps(spec)],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f"{label:<30} {d:>5} failed: {proc.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            out[f"{label}/{d}"] = r
            print(f"{label:<30} {d:>5} {r['fit']:>8.3f} {r['transform']:>12.3f} "
                  f"{r['extra_mib']:>10.0f} {r['norm_max']:>9.3f} {r['pair_max']:>9.3f} "
                  f"{r['pair_p95']:>9.3f} {r['r']:>7.3f}", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--parts", default="time,accuracy,calibration,sklearn")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    print(f"# bench_sketches_extra: {os.cpu_count()} CPUs; backends usable: "
          f"{', '.join(b.name for b in sk.backends() if b.usable)}")
    results = {}
    if "time" in parts:
        time_part(args.quick, args.repeat)
    if parts & {"accuracy", "calibration"}:
        results.update(accuracy_part(args.quick, parts))
    if "sklearn" in parts:
        results["sklearn"] = sklearn_part(args.quick)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
