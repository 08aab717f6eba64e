"""The sketches on every usable CPU backend: time against D, against dense baselines, and memory.

(a) affd, afjl, qk at N = 2^24 for D = 2^10 ... 2^18 on each backend (median ms); the ratio
    t(D=2^18) / t(D=2^10) shows which cost does not grow with D (affd/afjl should stay <= 1.3).
(b) one run at N = 2^22, D = 2^14, batch 32: affd/afjl/qk on each backend against the dense
    Gaussian sketch regenerated in blocks (``algo="dense"``) and scikit-learn's
    ``GaussianRandomProjection``. Both baselines cost O(N D) per vector; they are timed at a
    smaller N where they take seconds (and, for scikit-learn, where its stored N x D matrix fits
    in ``--max-gb``) and scaled linearly to N = 2^22, which the output says.
(d) time against N at D = 2^12 (N = 2^14 ... 2^24, one vector) for every algorithm x backend,
    beside the dense sketch and scikit-learn's ``GaussianRandomProjection`` (fit + transform),
    measured while one call stays under ``--dense-budget`` seconds (their cost grows like N D).
(c) peak memory of one apply (numpy-side resident set, measured in a fresh subprocess per case
    after a warm-up, with the kernel's high-water mark reset) against input + output size.

Log-log plots of time against D and against N go to ``--out`` (default bench-out/).

    python benchmarks/bench_backends.py            # full run (minutes)
    python benchmarks/bench_backends.py --quick    # small sizes (a smoke run)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fwht import cpu_backends, machine_line, median_ms, torch_route_line  # noqa: E402

ALGOS = ("affd", "afjl", "qk")


def time_sketch(be, algo, n, d, batch, repeat, *, seed=0):
    """Median ms of ``Sketch(algo, n, d).apply`` on ``be`` for a float32 batch (construction and
    parameter transfer excluded: the warm-up call does them)."""
    import sketchcore as sk

    op = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=seed)
    x = np.random.default_rng(1).standard_normal((batch, n), dtype=np.float32)
    xb = be.asarray(x)
    ms, runs = median_ms(lambda: op.apply(xb, backend=be), repeat, budget_s=10.0)
    return ms, runs


# ---- (a) ---------------------------------------------------------------------------------------
def part_a(backends, log_n, log_ds, repeat, bar):
    n = 1 << log_n
    table = {}
    for be in backends:
        for algo in ALGOS:
            for log_d in log_ds:
                ms, _ = time_sketch(be, algo, n, 1 << log_d, 1, repeat)
                table[(be.name, algo, log_d)] = ms
                gc.collect()
                bar.update()
    print(f"\n## (a) time against D at N = 2^{log_n}, one float32 vector (median ms)")
    head = "".join(f"{'D=2^' + str(v):>11}" for v in log_ds)
    print(f"{'backend':<8} {'algo':<6}{head} {'t(max D)/t(min D)':>19}")
    for be in backends:
        for algo in ALGOS:
            ts = [table[(be.name, algo, v)] for v in log_ds]
            cells = "".join(f"{t:>11.1f}" for t in ts)
            print(f"{be.name:<8} {algo:<6}{cells} {ts[-1] / ts[0]:>19.2f}")
    return table


def plot_a(table, backends, log_ds, log_n, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"affd": "-o", "afjl": "--s", "qk": ":^"}  # line style per algorithm
    for k, be in enumerate(backends):  # colour per backend
        for algo in ALGOS:
            ts = [table[(be.name, algo, v)] for v in log_ds]
            ax.loglog([1 << v for v in log_ds], ts, styles[algo], color=f"C{k}",
                      label=f"{algo} / {be.name}", base=2)
    return _save_loglog(fig, ax, "D (sketch dimension)",
                        f"apply time against D, N = 2^{log_n}, float32", out / "time_vs_D.png")


def _save_loglog(fig, ax, xlabel, title, path: Path) -> Path:
    """Label, grid, legend and write one time-against-size figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("ms per vector (median)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- (b) ---------------------------------------------------------------------------------------
def sklearn_time(n, d, batch, repeat):
    """(fit ms, transform ms) of GaussianRandomProjection on a float32 batch."""
    from sklearn.random_projection import GaussianRandomProjection

    x = np.random.default_rng(1).standard_normal((batch, n), dtype=np.float32)
    grp = GaussianRandomProjection(n_components=d, random_state=0)
    fit_ms, _ = median_ms(lambda: grp.fit(x), 1)
    tr_ms, _ = median_ms(lambda: grp.transform(x), repeat)
    del grp
    gc.collect()
    return fit_ms, tr_ms


def part_b(backends, log_n, log_d, batch, log_small, max_gb, repeat, bar):
    import sketchcore as sk

    n, d, n_small = 1 << log_n, 1 << log_d, 1 << log_small
    rows = []
    for be in backends:
        for algo in ALGOS:
            ms, _ = time_sketch(be, algo, n, d, batch, repeat)
            rows.append((f"{algo} / {be.name}", ms, "measured"))
            gc.collect()
            bar.update()
    numpy_be = sk.resolve_backend("numpy", None)
    dense_small, _ = time_sketch(numpy_be, "dense", n_small, d, batch, min(repeat, 3))
    bar.update()
    scale = n / n_small
    rows.append(("dense (regenerated blocks)", dense_small * scale,
                 f"measured at N=2^{log_small}: {dense_small:.0f} ms, x{scale:.0f} "
                 "(cost is linear in N)"))
    need_gb = n * d * 8 / 2**30  # scikit-learn stores components_ as float64
    fits_log2 = int(math.log2(max_gb * 2**30 / (8 * d)))
    skl_n = n if need_gb <= max_gb else min(n_small, 1 << fits_log2)
    skl_scale = n / skl_n
    try:
        fit_ms, tr_ms = sklearn_time(skl_n, d, batch, min(repeat, 3))
        how = ("measured" if skl_n == n else
               f"measured at N=2^{skl_n.bit_length() - 1}: {{:.0f}} ms, x{skl_scale:.0f}")
        rows.append(("sklearn GaussianRP transform", tr_ms * skl_scale, how.format(tr_ms)))
        rows.append(("sklearn GaussianRP fit (matrix)", fit_ms * skl_scale, how.format(fit_ms)))
        skl_note = (f"scikit-learn stores the D x N float64 matrix: {need_gb:.1f} GB at N=2^{log_n}"
                    f"; the largest N whose matrix fits in {max_gb} GB is 2^{fits_log2}")
    except ImportError as err:
        skl_note = f"scikit-learn baseline skipped: {err}"
    bar.update()
    dense_ms = next(ms for name, ms, _ in rows if name.startswith("dense"))
    print(f"\n## (b) N = 2^{log_n}, D = 2^{log_d}, batch {batch}, float32 (median ms per batch)")
    print(f"{'method':<34} {'ms':>12} {'dense / this':>13}  how")
    for name, ms, how in rows:
        print(f"{name:<34} {ms:>12.1f} {dense_ms / ms:>13.1f}  {how}")
    print(f"# {skl_note}")
    return rows


# ---- (d) ---------------------------------------------------------------------------------------
def part_d(backends, log_ns, log_d, repeat, budget_s, bar):
    """Time against N at fixed D; the O(N D) baselines stop once a call would exceed budget_s."""
    import sketchcore as sk

    d = 1 << log_d
    table = {}
    for be in backends:
        for algo in ALGOS:
            for log_n in log_ns:
                table[(f"{algo} / {be.name}", log_n)] = time_sketch(be, algo, 1 << log_n, d, 1,
                                                                    repeat)[0]
                gc.collect()
                bar.update()
    numpy_be = sk.resolve_backend("numpy", None)
    baselines = {
        "dense (regenerated)": lambda n: time_sketch(numpy_be, "dense", n, d, 1, 1)[0],
        "sklearn GaussianRP": lambda n: sum(sklearn_time(n, d, 1, 1)),  # fit + transform
    }
    for name, timer in baselines.items():
        last = None
        for log_n in log_ns:
            if last is not None and last * 4 > budget_s * 1e3:  # next N is 4x the work
                break
            try:
                last = table[(name, log_n)] = timer(1 << log_n)
            except (ImportError, MemoryError):
                break
            gc.collect()
        bar.update()
    print(f"\n## (d) time against N at D = 2^{log_d}, one float32 vector (median ms; dense and "
          f"scikit-learn (fit + transform) until a call would exceed {budget_s:g} s)")
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


def plot_d(table, log_ns, log_d, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"affd": "-o", "afjl": "--s", "qk": ":^"}
    backends = sorted({k[0].split(" / ")[1] for k in table if " / " in k[0]})
    for name in sorted({k[0] for k in table}):
        pts = [(1 << v, table[(name, v)]) for v in log_ns if (name, v) in table]
        if " / " in name:
            algo, be = name.split(" / ")
            style, color = styles[algo], f"C{backends.index(be)}"
        else:
            style, color = "-x", "k" if name.startswith("dense") else "gray"
        ax.loglog(*zip(*pts), style, color=color, label=name, base=2)
    return _save_loglog(fig, ax, "N (input dimension)",
                        f"apply time against N, D = 2^{log_d}, float32", out / "time_vs_N.png")


# ---- (c) ---------------------------------------------------------------------------------------
_PROBE = r"""
import gc, json, sys, numpy as np
spec = json.loads(sys.argv[1])
def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
x = np.random.default_rng(1).standard_normal((spec["batch"], spec["n"]), dtype=np.float32)
if spec["algo"] == "sklearn":
    from sklearn.random_projection import GaussianRandomProjection
    op = GaussianRandomProjection(n_components=spec["d"], random_state=0)
    run = lambda: op.fit_transform(x)
else:
    import sketchcore as sk
    be = sk.resolve_backend(spec["backend"], None)
    op = sk.Sketch(algo=spec["algo"], in_dim=spec["n"], out_dim=spec["d"], seed=0)
    xb = be.asarray(x)
    run = lambda: op.apply(xb, backend=be)
    y = run()  # warm-up: compilation, parameters moved into the backend
    del y
gc.collect()
base = rss_kb()
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
y = run()
peak = hwm_kb()
print(json.dumps({"extra_mb": (peak - base) / 1024, "params_mb": getattr(op, "nbytes", 0) / 2**20}))
"""


def part_c(backends, log_n, log_d, batch, log_small, bar):
    cases = [(be.name, algo, log_n) for be in backends for algo in ALGOS]
    cases += [("numpy", "dense", log_small), ("sklearn", "sklearn", log_small)]
    print(f"\n## (c) peak extra resident memory of one apply, D = 2^{log_d}, batch {batch}, "
          "float32 (fresh process per case, after a warm-up)")
    print(f"{'method':<20} {'N':>6} {'input MB':>9} {'output MB':>10} {'params MB':>10} "
          f"{'peak extra MB':>14} {'extra / input':>14}")
    for backend, algo, ln in cases:
        spec = {"backend": backend, "algo": algo, "n": 1 << ln, "d": 1 << log_d, "batch": batch}
        proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(spec)],
                              capture_output=True, text=True, timeout=900)
        bar.update()
        in_mb = batch * (1 << ln) * 4 / 2**20
        out_mb = batch * (1 << log_d) * 4 / 2**20
        name = f"{algo} / {backend}" if algo != "sklearn" else "sklearn GaussianRP"
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{name:<20} 2^{ln:<4} failed: {err}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name:<20} {'2^' + str(ln):>6} {in_mb:>9.1f} {out_mb:>10.2f} "
              f"{r['params_mb']:>10.1f} {r['extra_mb']:>14.1f} {r['extra_mb'] / in_mb:>14.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per case (median)")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="folder for the plot")
    p.add_argument("--dense-budget", type=float, default=20.0,
                   help="(d): stop the O(N D) baselines once one call would exceed this many s")
    p.add_argument("--max-gb", type=float, default=8.0,
                   help="largest matrix the scikit-learn baseline may allocate")
    args = p.parse_args(argv)
    from tqdm import tqdm

    if args.quick:
        log_n_a, log_ds = 18, [8, 10, 12]
        log_n_b, log_d_b, batch, log_small = 16, 10, 4, 13
        log_ns, log_d_d = [10, 12, 14], 8
    else:
        log_n_a, log_ds = 24, [10, 12, 14, 16, 18]
        log_n_b, log_d_b, batch, log_small = 22, 14, 32, 15
        log_ns, log_d_d = [14, 16, 18, 20, 22, 24], 12
    backends, skipped = cpu_backends()
    print(f"# sketches on CPU backends; {machine_line()}")
    if torch_route_line():
        print(f"# {torch_route_line()}")
    for line in skipped:
        print(f"# skipped {line}")
    args.out.mkdir(parents=True, exist_ok=True)
    n_cases = len(backends) * len(ALGOS) * (len(log_ds) + len(log_ns) + 2) + 6
    bar = tqdm(total=n_cases, desc="sketches", file=sys.stderr)
    table = part_a(backends, log_n_a, log_ds, args.repeat, bar)
    print(f"# plot: {plot_a(table, backends, log_ds, log_n_a, args.out)}")
    part_b(backends, log_n_b, log_d_b, batch, log_small, args.max_gb, args.repeat, bar)
    table_d = part_d(backends, log_ns, log_d_d, args.repeat, args.dense_budget, bar)
    print(f"# plot: {plot_d(table_d, log_ns, log_d_d, args.out)}")
    part_c(backends, log_n_b, log_d_b, batch, log_small, bar)
    bar.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
