"""The sketches on every usable CPU backend, against the memory floor and against dense/sparse
projections (TRAK's BasicProjector, scikit-learn), with peak memory.

(b) batches of 32 float32 vectors at N = 2^20, 2^22 and D = 2^12, 2^14: affd, afjl and qk on the
    numba backend with one thread (pinned to one CPU), and on the numba, torch and jax backends
    with all threads (the BLAS under numpy stays at one thread, see ``set_threads``). Every method
    is timed in each of ``--rounds`` interleaved rounds (copy, numba, torch, jax, copy, ...);
    cells are min-of-N times divided by the min-of-N time of one ``np.copyto`` pass over the same
    batch in the same rounds: "x copy" is the time per vector in units of the copy floor per
    vector. Then the baselines with all threads: TRAK's ``BasicProjector``
    (``traker``; regenerates its Gaussian matrix block by block on every call), scikit-learn's
    ``GaussianRandomProjection`` and ``SparseRandomProjection`` with ``fit`` (building the
    matrix) and ``transform`` timed apart. They cost O(N D) (dense) or O(D sqrt N) (sparse) per
    call; TRAK and the Gaussian one are timed once per D at a smaller N and scaled linearly in N,
    the sparse one once at N = 2^20, D = 2^12 and scaled by its number of non-zeros (checked
    against a full measurement at N = 2^22, D = 2^14: fit 166 s measured, 172 s scaled;
    transform 5.2 s measured, 6.6 s scaled), as the output says.
(c) peak extra resident memory of one call (fresh process per method, after a warm-up) at
    N = 2^22, D = 2^14, batch 32; the baselines at sizes where they finish in seconds.
(a) time against D = 2^10, 2^14, 2^18 at N = 2^24 (one vector, all threads): affd/afjl flat in
    D, qk not.
(d) time against N at D = 2^12 (one vector, all threads), beside the dense baselines while one
    call stays under ``--dense-budget`` seconds.

Log-log plots of (a) and (d) go to ``--out`` (default bench-out/).

    python benchmarks/bench_backends.py            # everything (about 10 minutes on 2 cores)
    python benchmarks/bench_backends.py --quick    # small sizes (a smoke run)
    python benchmarks/bench_backends.py --parts b,c
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # OpenMP pools of several libraries share CPUs

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fwht import (MinTimer, aligned, cpu_backends, machine_line,  # noqa: E402
                        torch_route_line)

ALGOS = ("affd", "afjl", "qk")
#: the sketchcore backends the tables show (numpy, the reference, is timed by bench_core.py)
SHOWN = ("numba", "torch", "jax")


_BLAS_LIMIT = None


def set_threads(n: int) -> None:
    """numba and torch to ``n`` threads; the BLAS under numpy (numba's qk is numpy matmuls) to
    one thread always: two OpenBLAS threads on a shared 2-core machine wait for each other's
    time slices (measured: qk at N = 2^14, D = 2^12 took 53 ms with two, 0.11 ms with one)."""
    global _BLAS_LIMIT
    import numba

    numba.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    if _BLAS_LIMIT is None:
        try:
            from threadpoolctl import threadpool_limits

            _BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")
        except ImportError:
            pass


def sketch_timer(be, algo, n, d, xb, seed=0):
    """A MinTimer of ``Sketch(algo, n, d).apply`` on backend ``be`` for ``xb`` (an array of the
    backend's library; construction and parameter transfer happen in the warm-up)."""
    import sketchcore as sk

    op = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=seed)
    return MinTimer(lambda: op.apply(xb, backend=be), round_s=0.0)


# ---- (b) ---------------------------------------------------------------------------------------
def part_b(backends, cases, batch, rounds, threads_all, pin):
    """One thread: the numba backend; all threads: every backend."""
    results = {}
    modes = [(1, pin)] + ([(threads_all, None)] if threads_all > 1 else [])
    for threads, where in modes:
        shown = backends if threads > 1 or len(modes) == 1 else backends[:1]
        set_threads(threads)
        old = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if where is not None:
            os.sched_setaffinity(0, {where})
        try:
            for log_n, log_d in cases:
                n, d = 1 << log_n, 1 << log_d
                x = aligned((batch, n), np.float32)
                x[...] = np.random.default_rng(1).standard_normal((batch, n), dtype=np.float32)
                dst = aligned((batch, n), np.float32)
                timers = {"copy": MinTimer(lambda: np.copyto(dst, x), round_s=0.0)}
                for be in shown:
                    xb = be.asarray(x)  # zero-copy for torch; one device copy for jax
                    for algo in ALGOS:
                        timers[f"{be.name} {algo}"] = sketch_timer(be, algo, n, d, xb)
                for _ in range(rounds):
                    for t in timers.values():
                        t.run()
                results[(threads, log_n, log_d)] = {k: t.ms for k, t in timers.items()}
                results[(threads, log_n, log_d, "N")] = min(t.calls for t in timers.values())
                del x, dst, timers
                gc.collect()
        finally:
            if old is not None:
                os.sched_setaffinity(0, old)
    set_threads(threads_all)
    for threads, where in modes:
        how = f"pinned to CPU {where}" if where is not None else "unpinned"
        print(f"\n## (b) batch {batch}, float32, {threads} thread{'s' if threads > 1 else ''} "
              f"({how}): x copy = min-of-N time / min-of-N time of one np.copyto pass over the "
              f"batch, in the same {rounds} interleaved rounds (= per vector, in copy floors)")
        names = [k for k in results[(threads, *cases[0])] if k != "copy"]
        print(f"{'N':<6}{'D':<6}{'copy ms':>9}{'N':>4}" + "".join(f"{n:>12}" for n in names))
        for log_n, log_d in cases:
            r = results[(threads, log_n, log_d)]
            cells = "".join(f"{r[n] / r['copy']:>12.2f}" for n in names)
            print(f"{'2^' + str(log_n):<6}{'2^' + str(log_d):<6}{r['copy']:>9.1f}"
                  f"{results[(threads, log_n, log_d, 'N')]:>4}{cells}")
    return results


def trak_time(n, d, batch, reps=2):
    """(ms per batch, None) of TRAK's BasicProjector.project, or (None, reason)."""
    try:
        import torch
        from trak.projectors import BasicProjector, ProjectionType
    except Exception as err:  # noqa: BLE001 - report why, keep going
        return None, f"{type(err).__name__}: {err} (pip install traker)"
    proj = BasicProjector(grad_dim=n, proj_dim=d, seed=0, proj_type=ProjectionType.normal,
                          device=torch.device("cpu"))
    g = torch.randn(batch, n)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        proj.project(g, model_id=0)
        best = min(best, time.perf_counter() - t0)
    del proj, g
    gc.collect()
    return best * 1e3, None


#: largest stored dense matrix the baseline builds (bytes, float32)
STORED_MAX_BYTES = 2 << 30


def stored_dense_time(d, batch, n_max, reps=2):
    """(ms per batch, N measured at) of ``x @ M.T`` with a stored float32 Gaussian ``M`` (D x N):
    the dense baseline of a user with memory to spare, bound by BLAS instead of the random-number
    generator; N is ``n_max`` or the largest power of two whose matrix stays under
    ``STORED_MAX_BYTES``, whichever is smaller."""
    n = min(n_max, 1 << ((STORED_MAX_BYTES // (4 * d)).bit_length() - 1))
    rng = np.random.default_rng(0)
    m = rng.standard_normal((d, n), dtype=np.float32)
    x = rng.standard_normal((batch, n), dtype=np.float32)
    x @ m.T  # warm-up (BLAS threads, page faults)
    best = min(timed(lambda: x @ m.T) for _ in range(reps))
    del m
    return best * 1e3, n


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def sklearn_times(kind, n, d, batch):
    """(fit ms, transform ms, None) of scikit-learn's random projection ``kind``, or reason."""
    try:
        from sklearn import random_projection as rp
    except Exception as err:  # noqa: BLE001
        return None, None, f"{type(err).__name__}: {err} (pip install scikit-learn)"
    cls = rp.GaussianRandomProjection if kind == "gaussian" else rp.SparseRandomProjection
    x = np.random.default_rng(1).standard_normal((batch, n), dtype=np.float32)
    est = cls(n_components=d, random_state=0)
    t0 = time.perf_counter()
    est.fit(x)
    fit = time.perf_counter() - t0
    est.transform(x)
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        est.transform(x)
        best = min(best, time.perf_counter() - t0)
    del est, x
    gc.collect()
    return fit * 1e3, best * 1e3, None


def part_b_baselines(cases, batch, res_b, threads_all, log_trak, log_gauss, log_sparse):
    """TRAK and scikit-learn, measured once per D at a smaller N and scaled to each case's N
    (all threads); a stored dense float32 matrix (BLAS) at the largest N that fits in 2 GiB."""
    set_threads(threads_all)
    print(f"\n## (b) baselines, batch {batch}, float32, {threads_all} threads: ms per batch (min "
          "of 2 calls), measured at a smaller N (once per D) and scaled to the case's N as "
          "noted; 'best sketch' = the fastest sketchcore method of the case with all threads; "
          "speed-up = baseline / best sketch")
    print(f"{'N':<6}{'D':<6}{'method':<34}{'ms':>14}{'speed-up':>10}  how")
    notes, measured = [], {}
    log_ds = sorted({d for _, d in cases})
    for log_d in log_ds:
        d = 1 << log_d
        ms, why = trak_time(1 << log_trak, d, batch)
        measured[(log_d, "trak")] = ms
        if ms is None:
            notes.append(f"TRAK BasicProjector skipped: {why}")
        # the Gaussian matrix is D x N: N >= D, or scikit-learn refuses to "reduce" dimensions
        fit, tr, why = sklearn_times("gaussian", max(1 << log_gauss, d), d, batch)
        measured[(log_d, "gaussian")] = (fit, tr, max(log_gauss, log_d))
        measured[(log_d, "stored")] = stored_dense_time(
            d, batch, max(1 << n_ for n_, d_ in cases if d_ == log_d))
        if fit is None:
            notes.append(f"scikit-learn skipped: {why}")
    # the sparse matrix: measured once (its cost follows nnz = D sqrt(N) only once X leaves the
    # caches, so not at a small N), scaled by nnz to the other cases
    log_sd = log_ds[0]
    fit, tr, why = sklearn_times("sparse", 1 << log_sparse, 1 << log_sd, batch)
    if fit is None:
        notes.append(f"scikit-learn skipped: {why}")
    for log_n, log_d in cases:
        n = 1 << log_n
        r = res_b.get((threads_all, log_n, log_d)) or res_b.get((1, log_n, log_d))
        best_name = min((k for k in r if k != "copy"), key=r.get)
        best = r[best_name]
        rows = [(f"best sketch: {best_name}", best, "measured in (b)")]
        ms = measured[(log_d, "trak")]
        if ms is not None:
            s = n / (1 << log_trak)
            rows.append(("TRAK BasicProjector.project", ms * s,
                         f"N=2^{log_trak}: {ms:.0f} ms, x{s:.0f} (linear in N)"))
        st_ms, st_n = measured[(log_d, "stored")]
        rows.append(("dense stored float32 matrix (BLAS)", st_ms * n / st_n,
                     f"N=2^{st_n.bit_length() - 1}: {st_ms:.0f} ms, x{n / st_n:g} (linear in "
                     f"N; a {4 * d * st_n / 2**30:g} GiB matrix, {4 * d * n / 2**30:g} GiB "
                     "at the case's N)"))
        g_fit, g_tr, log_g = measured[(log_d, "gaussian")]
        sparse = [] if fit is None else [
            ("SparseRP", fit, tr, (1 << (log_d - log_sd)) * math.sqrt(n >> log_sparse),
             f"N=2^{log_sparse}, D=2^{log_sd}", "nnz ~ D sqrt(N)")]
        gauss = [] if g_fit is None else [
            ("GaussianRP", g_fit, g_tr, n / (1 << log_g), f"N=2^{log_g}", "linear in N")]
        for label, f_ms, t_ms, s, where, law in gauss + sparse:
            how = f"{where}: fit {f_ms:.0f} ms, transform {t_ms:.0f} ms, x{s:.1f} ({law})"
            rows.append((f"sklearn {label}.transform", t_ms * s, how))
            rows.append((f"sklearn {label}.fit", f_ms * s, how))
            rows.append((f"sklearn {label} fit + transform", (f_ms + t_ms) * s, how))
        for name, ms, how in rows:
            print(f"{'2^' + str(log_n):<6}{'2^' + str(log_d):<6}{name:<34}{ms:>14.1f}"
                  f"{ms / best:>10.1f}  {how}")
    for line in sorted(set(notes)):
        print(f"# {line}")


# ---- (c) ---------------------------------------------------------------------------------------
_PROBE = r"""
import gc, json, sys, numpy as np
spec = json.loads(sys.argv[1])
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
x = np.random.default_rng(1).standard_normal((spec["batch"], spec["n"]), dtype=np.float32)
kind = spec["kind"]
if kind == "trak":
    import torch
    from trak.projectors import BasicProjector, ProjectionType
    xt = torch.from_numpy(x)
    op = BasicProjector(grad_dim=spec["n"], proj_dim=spec["d"], seed=0,
                        proj_type=ProjectionType.normal, device=torch.device("cpu"))
    run = lambda: op.project(xt, model_id=0)
    run()
elif kind in ("gaussian", "sparse"):
    from sklearn import random_projection as rp
    cls = rp.GaussianRandomProjection if kind == "gaussian" else rp.SparseRandomProjection
    run = lambda: cls(n_components=spec["d"], random_state=0).fit_transform(x)
else:
    import sketchcore as sk
    be = sk.resolve_backend(spec["backend"], None)
    op = sk.Sketch(algo=kind, in_dim=spec["n"], out_dim=spec["d"], seed=0)
    xb = be.asarray(x)
    run = lambda: op.apply(xb, backend=be)
    y = run()  # warm-up: compilation, parameters moved into the backend, scratch
    del y
gc.collect()
base = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
y = run()
extra = (status("VmHWM:") - base) / 1024
kept = 0  # scratch the numba kernels keep between calls (made by the warm-up)
for name in ("sketchcore_numba._ops", "sketchcore_numba._kernels"):
    mod = sys.modules.get(name)
    if mod is not None:
        kept += sum(getattr(v, "nbytes", 0) for v in vars(mod._local).values())
print(json.dumps({"extra_mb": extra, "kept_mb": kept / 2**20}))
"""


def part_c(backends, log_n, log_d, batch, baselines):
    """``baselines``: (kind, log2 N, log2 D) of the baselines, at sizes they fit and finish at."""
    cases = [(be.name, algo, log_n, log_d) for be in backends for algo in ALGOS]
    cases += [("", kind, ln, ld) for kind, ln, ld in baselines]
    print(f"\n## (c) peak extra resident memory of one call, batch {batch}, float32 "
          "(fresh process per method, after a warm-up; the scikit-learn rows build their "
          "matrix inside the call; kept scratch: what the numba kernels keep between calls, "
          "made by the warm-up, not counted in the peak)")
    print(f"{'method':<22}{'N':>6}{'D':>6}{'input MB':>10}{'output MB':>11}{'peak extra MB':>15}"
          f"{'extra / input':>15}{'kept scratch MB':>17}")
    for backend, kind, ln, ld in cases:
        spec = {"backend": backend, "kind": kind, "n": 1 << ln, "d": 1 << ld, "batch": batch}
        name = f"{kind} / {backend}" if backend else {"trak": "TRAK BasicProjector",
                                                      "gaussian": "sklearn GaussianRP",
                                                      "sparse": "sklearn SparseRP"}[kind]
        try:
            proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(spec)],
                                  capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            print(f"{name:<22}{'2^' + str(ln):>6}{'2^' + str(ld):>6}  timed out")
            continue
        in_mb = batch * (1 << ln) * 4 / 2**20
        out_mb = batch * (1 << ld) * 4 / 2**20
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{name:<22}{'2^' + str(ln):>6}{'2^' + str(ld):>6}  skipped: {err}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name:<22}{'2^' + str(ln):>6}{'2^' + str(ld):>6}{in_mb:>10.1f}{out_mb:>11.2f}"
              f"{r['extra_mb']:>15.1f}{r['extra_mb'] / in_mb:>15.2f}{r['kept_mb']:>17.1f}")


# ---- (a) and (d) -------------------------------------------------------------------------------
def _single_vector_times(backends, n, d, rounds):
    x = aligned((n,), np.float32)
    x[...] = np.random.default_rng(2).standard_normal(n, dtype=np.float32)
    timers = {}
    for be in backends:
        xb = be.asarray(x)
        for algo in ALGOS:
            timers[(be.name, algo)] = sketch_timer(be, algo, n, d, xb)
    for _ in range(rounds):
        for t in timers.values():
            t.run()
    return {k: t.ms for k, t in timers.items()}


def part_a(backends, log_n, log_ds, rounds):
    table = {}
    for log_d in log_ds:
        for k, ms in _single_vector_times(backends, 1 << log_n, 1 << log_d, rounds).items():
            table[(*k, log_d)] = ms
        gc.collect()
    print(f"\n## (a) time against D at N = 2^{log_n}, one float32 vector, all threads "
          f"(min of {rounds} interleaved rounds, ms)")
    head = "".join(f"{'D=2^' + str(v):>11}" for v in log_ds)
    print(f"{'backend':<8} {'algo':<6}{head} {'t(max D)/t(min D)':>19}")
    for be in backends:
        for algo in ALGOS:
            ts = [table[(be.name, algo, v)] for v in log_ds]
            print(f"{be.name:<8} {algo:<6}" + "".join(f"{t:>11.1f}" for t in ts)
                  + f" {ts[-1] / ts[0]:>19.2f}")
    return table


def part_d(backends, log_ns, log_d, rounds, budget_s):
    import sketchcore as sk

    d = 1 << log_d
    table = {}
    for log_n in log_ns:
        for (be, algo), ms in _single_vector_times(backends, 1 << log_n, d, rounds).items():
            table[(f"{algo} / {be}", log_n)] = ms
        gc.collect()
    numpy_be = sk.resolve_backend("numpy", None)

    def dense(n):
        t = sketch_timer(numpy_be, "dense", n, d, np.ones(n, dtype=np.float32))
        t.run()
        return t.ms

    baselines = {"dense (regenerated)": dense,
                 "TRAK BasicProjector": lambda n: trak_time(n, d, 1, reps=1)[0],
                 "sklearn GaussianRP": lambda n: sum(sklearn_times("gaussian", n, d, 1)[:2]),
                 "sklearn SparseRP": lambda n: sum(sklearn_times("sparse", n, d, 1)[:2])}
    for name, timer in baselines.items():
        last = None
        for log_n in log_ns:
            if last is not None and last * 4 > budget_s * 1e3:  # the next N is 4x the work
                break
            try:
                last = timer(1 << log_n)
            except (ImportError, MemoryError, TypeError):
                break
            if last is None:
                break
            table[(name, log_n)] = last
            gc.collect()
    print(f"\n## (d) time against N at D = 2^{log_d}, one float32 vector, all threads (min of "
          f"{rounds} interleaved rounds, ms; the baselines (scikit-learn: fit + transform) "
          f"while a call stays under {budget_s:g} s)")
    names = sorted({k[0] for k in table}, key=lambda k: (k.split(" / ")[-1], k))
    head = "".join(f"{'N=2^' + str(v):>11}" for v in log_ns)
    print(f"{'method':<22}{head}  slope (log t / log N, last 2 points)")
    for name in names:
        ts = [table.get((name, v)) for v in log_ns]
        cells = "".join(f"{t:>11.1f}" if t is not None else f"{'-':>11}" for t in ts)
        got = [(v, t) for v, t in zip(log_ns, ts) if t is not None]
        slope = (math.log2(got[-1][1] / got[-2][1]) / (got[-1][0] - got[-2][0])
                 if len(got) > 1 else float("nan"))
        print(f"{name:<22}{cells}  {slope:>5.2f}")
    return table


def _plot(series, xlabel, title, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"affd": "-o", "afjl": "--s", "qk": ":^"}
    backends = sorted({k.split(" / ")[1] for k in series if " / " in k})
    for name, pts in sorted(series.items()):
        if " / " in name:
            algo, be = name.split(" / ")
            style, color = styles[algo], f"C{backends.index(be)}"
        else:
            style, color = "-x", {"dense (regenerated)": "k", "TRAK BasicProjector": "brown",
                                  "sklearn GaussianRP": "gray"}.get(name, "silver")
        ax.loglog(*zip(*pts), style, color=color, label=name, base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ms per vector (min of the rounds)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- main --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--parts", default="b,c,a,d", help="which parts to run (default b,c,a,d)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of part (b)")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="folder for the plots")
    p.add_argument("--dense-budget", type=float, default=5.0,
                   help="(d): stop a dense baseline once one call would exceed this many s")
    args = p.parse_args(argv)
    import numba

    parts = set(args.parts.split(","))
    set_threads(numba.get_num_threads())
    usable, skipped = cpu_backends()
    backends = [be for name in SHOWN for be in usable if be.name == name]
    threads_all = numba.get_num_threads()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
    if args.quick:
        cases, batch = [(14, 8), (16, 10)], 8
        log_trak, log_gauss, log_sparse = 12, 10, 14
        log_n_a, log_ds, log_ns, log_d_d = 16, [8, 10, 12], [10, 12, 14], 8
        mem = (14, 8)
        mem_baselines = [("trak", 12, 8), ("gaussian", 12, 8), ("sparse", 12, 8)]
    else:
        cases, batch = [(20, 12), (20, 14), (22, 12), (22, 14)], 32
        log_trak, log_gauss, log_sparse = 15, 12, 20
        log_n_a, log_ds, log_ns, log_d_d = 24, [10, 14, 18], [14, 16, 18, 20, 22, 24], 12
        mem = (22, 14)
        mem_baselines = [("trak", 15, 14), ("gaussian", 14, 12), ("sparse", 16, 12)]
    print(f"# sketches on CPU backends; {machine_line()}")
    if torch_route_line():
        print(f"# {torch_route_line()}")
    try:
        from sketchcore_jax import host

        print("# jax rows: concrete CPU arrays of affd/afjl through the numba kernels "
              f"({'on' if host.enabled() else 'off'}; SKETCHCORE_JAX_HOST_KERNELS=0 keeps them "
              "on XLA); qk is the jitted XLA program")
    except ImportError:
        pass
    for line in skipped:
        print(f"# skipped {line}")
    args.out.mkdir(parents=True, exist_ok=True)
    if "b" in parts:
        res_b = part_b(backends, cases, batch, args.rounds, threads_all, cpus[-1])
        part_b_baselines(cases, batch, res_b, threads_all, log_trak, log_gauss, log_sparse)
    if "c" in parts:
        part_c(backends, mem[0], mem[1], batch, mem_baselines)
    if "a" in parts:
        table = part_a(backends, log_n_a, log_ds, 3)
        series = {f"{algo} / {be}": [(1 << v, table[(be, algo, v)]) for v in log_ds]
                  for (be, algo, _) in table}
        title = f"apply time against D, N = 2^{log_n_a}, float32"
        print(f"# plot: {_plot(series, 'D (sketch dimension)', title, args.out / 'time_vs_D.png')}")
    if "d" in parts:
        table = part_d(backends, log_ns, log_d_d, 3, args.dense_budget)
        series: dict = {}
        for (name, v), ms in table.items():
            series.setdefault(name, []).append((1 << v, ms))
        title = f"apply time against N, D = 2^{log_d_d}, float32"
        print(f"# plot: {_plot(series, 'N (input dimension)', title, args.out / 'time_vs_N.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
