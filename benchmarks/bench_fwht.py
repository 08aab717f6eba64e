"""FWHT speed of every usable CPU backend next to one memory copy pass, side by side in one run.

For each size, the same float32 data is transformed by each backend's ``fwht`` (arrays of that
backend's library), and one ``np.copyto`` read+write pass over an array of the same size is timed
in the same run: the ratio to that pass says how close a transform is to the memory floor.
Timings are medians of ``--repeat`` runs after one warm-up (compilation never counted).

    python benchmarks/bench_fwht.py            # n = 2^20, 2^24, 2^26 and a batch 64 x 2^20
    python benchmarks/bench_fwht.py --quick    # smaller sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

import numpy as np

#: the CPU array libraries whose sketchcore backends are timed (cupy arrays live on a GPU)
CPU_MODULES = ("numpy", "torch", "jax")


def sync(y) -> None:
    """Wait for an asynchronous result (jax); a no-op for eager libraries."""
    wait = getattr(y, "block_until_ready", None)
    if wait is not None:
        wait()


def median_ms(fn, repeat: int, budget_s: float = 20.0) -> tuple[float, int]:
    """Median wall time of ``fn()`` in ms over ``repeat`` runs after one untimed warm-up
    (compilation, first-touch allocations). Fewer runs (at least one) when the first timed run
    says ``repeat`` runs would take longer than ``budget_s``. Returns (median ms, runs)."""
    sync(fn())
    times = []
    runs = repeat
    while len(times) < runs:
        gc.collect()
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
        if len(times) == 1:
            runs = max(1, min(repeat, int(budget_s / max(times[0], 1e-9))))
    return statistics.median(times) * 1e3, runs


def cpu_backends() -> tuple[list, list[str]]:
    """(usable CPU backends, lines saying which were skipped and why)."""
    import sketchcore as sk

    usable, skipped = [], []
    for info in sk.backends():
        if info.array_module not in CPU_MODULES:
            skipped.append(f"{info.name}: not a CPU array library ({info.array_module})")
        elif not info.usable:
            skipped.append(f"{info.name}: {info.reason}")
        else:
            usable.append(sk.resolve_backend(info.name, None))
    return usable, skipped


def machine_line() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    threads = ""
    try:
        import numba

        threads = f", numba threads {numba.get_num_threads()}"
    except ImportError:
        pass
    return (f"{os.cpu_count()} CPUs{threads}, load average {load[0]:.1f} (1 min) "
            f"-- other work on the machine inflates the numbers")


def torch_route_line() -> str | None:
    """Where CPU torch tensors are computed (None when the torch backend is not installed)."""
    try:
        from sketchcore_torch import host
    except ImportError:
        return None
    hb = host.host_backend()
    return ("torch rows: CPU tensors through the " + hb.name + " kernels (zero-copy; "
            "SKETCHCORE_TORCH_HOST_KERNELS=0 keeps them on torch's own ops)" if hb else
            "torch rows: torch's own ops")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    p.add_argument("--repeat", type=int, default=7, help="timed runs per case (median reported)")
    args = p.parse_args(argv)
    from tqdm import tqdm

    cases = ([(1, 16), (1, 20), (16, 16)] if args.quick else [(1, 20), (1, 24), (1, 26), (64, 20)])
    backends, skipped = cpu_backends()
    print(f"# FWHT float32, median of up to {args.repeat} runs after a warm-up; {machine_line()}")
    for line in skipped:
        print(f"# skipped {line}")
    rows = []
    bar = tqdm(total=len(cases) * (len(backends) + 1), desc="fwht", file=sys.stderr)
    for batch, log_n in cases:
        n = 1 << log_n
        x = np.random.default_rng(0).standard_normal((batch, n), dtype=np.float32)
        if batch == 1:
            x = x[0]
        dst = np.empty_like(x)
        copy_ms, copy_runs = median_ms(lambda: np.copyto(dst, x), max(args.repeat, 9))
        bar.update()
        label = f"{batch} x 2^{log_n}" if batch > 1 else f"2^{log_n}"
        rows.append((label, "np.copyto (1 pass)", copy_ms, 1.0, copy_runs))
        for be in backends:
            xb = be.asarray(x)
            ms, runs = median_ms(lambda: be.fwht(xb), args.repeat)
            rows.append((label, be.name, ms, ms / copy_ms, runs))
            if be.name == "numba":  # on a busy machine one thread can beat two: show both
                import numba

                threads = numba.get_num_threads()
                numba.set_num_threads(1)
                ms, runs = median_ms(lambda: be.fwht(xb), args.repeat)
                numba.set_num_threads(threads)
                rows.append((label, "numba (1 thread)", ms, ms / copy_ms, runs))
            if be.name == "torch":  # CPU tensors go to numba's kernels when installed: show both
                from sketchcore_torch import host

                if host.host_backend() is not None:
                    rows[-1] = (label, f"torch (via {host.host_backend().name})", *rows[-1][2:])
                    old = os.environ.get("SKETCHCORE_TORCH_HOST_KERNELS", "1")
                    os.environ["SKETCHCORE_TORCH_HOST_KERNELS"] = "0"
                    try:
                        ms, runs = median_ms(lambda: be.fwht(xb), args.repeat)
                    finally:
                        os.environ["SKETCHCORE_TORCH_HOST_KERNELS"] = old
                    rows.append((label, "torch (own ops)", ms, ms / copy_ms, runs))
            del xb
            bar.update()
        del x, dst
        gc.collect()
    bar.close()
    print(f"{'size':<12} {'implementation':<20} {'ms':>10} {'x copy':>8} {'runs':>5}")
    for label, name, ms, ratio, runs in rows:
        print(f"{label:<12} {name:<20} {ms:>10.2f} {ratio:>8.2f} {runs:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
