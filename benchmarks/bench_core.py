"""Reference-backend timing of every sketch vs D, with peak memory.

Times each algorithm on the numpy reference backend (the portable array-API kernels, no
accelerated backend) at N = 2^20 and 2^22 for D = 2^10 ... 2^18 and prints the median ms, the
ratio t(D=2^18)/t(D=2^10) (affd/afjl must be flat, qk grows at most like its largest factor D_i,
dense linearly), the operator's parameter memory and the peak memory of one application
(tracemalloc, which numpy reports its allocations to). The dense baseline regenerates its Gaussian
matrix on every call (~N*D numbers); it is run only while one call stays under --dense-budget
seconds, and the table says where it stopped.

    python benchmarks/bench_core.py            # full table (~10 minutes here)
    python benchmarks/bench_core.py --quick    # N = 2^16, 2^18 and D = 2^8 ... 2^14
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

import numpy as np

import sketchcore as sk

ALGOS = ["dense", "fjl", "ffd", "affd", "afjl", "qk"]


def timed(fn, repeat):
    fn()  # warm-up (also materializes the operator's parameters)
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_bytes(fn):
    gc.collect()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dense-budget", type=float, default=60.0,
                   help="max predicted seconds per dense call (it grows linearly in D)")
    args = p.parse_args(argv)
    log_ns = [16, 18] if args.quick else [20, 22]
    log_ds = list(range(8, 15, 2)) if args.quick else list(range(10, 19, 2))
    print(f"# bench_core: numpy reference backend, float32, one vector; median of {args.repeat}")
    print(f"{'algo':<6} {'log2N':>5} {'log2D':>5} {'ms':>10} {'params MiB':>10} {'peak MiB':>9}  note")
    rows = {}
    for log_n in log_ns:
        n = 1 << log_n
        x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        for algo in ALGOS:
            skip = None
            # dense also runs below the grid, so its linear growth shows before the budget stops it
            grid = sorted({log_ds[0] - 4, log_ds[0] - 2, *log_ds}) if algo == "dense" else log_ds
            for log_d in grid:
                d = 1 << log_d
                if skip:
                    print(f"{algo:<6} {log_n:>5} {log_d:>5} {'-':>10} {'-':>10} {'-':>9}  {skip}")
                    continue
                op = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=0)
                fn = lambda: op.apply(x, backend="numpy")  # noqa: E731
                repeat = 1 if algo == "dense" else args.repeat
                t = timed(fn, repeat)
                peak = peak_bytes(fn)
                note = ""
                if algo == "qk":
                    note = f"factors in {op.options['in_factors']} out {op.options['out_factors']}"
                rows[(algo, log_n, log_d)] = t
                print(f"{algo:<6} {log_n:>5} {log_d:>5} {t * 1e3:>10.1f} {op.nbytes / 2**20:>10.1f} "
                      f"{peak / 2**20:>9.1f}  {note}", flush=True)
                step = 2 ** (grid[min(grid.index(log_d) + 1, len(grid) - 1)] - log_d)
                if algo == "dense" and step * t > args.dense_budget:
                    skip = f"not run: the next D would take ~{step * t:.0f} s per call (linear in D)"
    print("\n# ratio t(D=max)/t(D=min) per algorithm (affd/afjl flat: <= 1.3)")
    lo, hi = log_ds[0], log_ds[-1]
    for log_n in log_ns:
        for algo in ALGOS:
            a, b = rows.get((algo, log_n, lo)), rows.get((algo, log_n, hi))
            if a and b:
                print(f"{algo:<6} N=2^{log_n}: {b / a:6.2f}")
            else:
                ran = sorted(k[2] for k in rows if k[0] == algo and k[1] == log_n)
                first, last = ran[0], ran[-1]
                r = rows[(algo, log_n, last)] / rows[(algo, log_n, first)]
                print(f"{algo:<6} N=2^{log_n}: t(2^{last})/t(2^{first}) = {r:6.2f} "
                      f"(D grew {2 ** (last - first)}x; larger D not run)")


if __name__ == "__main__":
    main()
