"""FWHT speed: sketchcore's numba kernel against FFHT, fht-cpu and hadamard-transform, next to one
memory copy pass, side by side in one run.

For every size (single vectors n = 2^10 ... 2^26 and the batches 64 x 2^16 and 32 x 2^20), dtype
(float32, float64) and thread setting (one thread pinned to one CPU, then all threads), each
implementation is timed in every one of ``--rounds`` interleaved rounds (copy, ours, peers, copy,
ours, peers, ...), several calls per round; the table reports the minimum over all timed calls
(min-of-N: on a shared machine the minimum is the least disturbed run) divided by the minimum of
one ``np.copyto`` read+write pass over the same data in the same rounds ("x copy"). Forms:

* ``new``: returns a new array (its pages are first touched by the transform: the difference to
  ``out=`` is the first-touch cost of a fresh output);
* ``out=``: writes a caller-provided array (ours: ``NumbaBackend.fwht(x, out=o)``; fht-cpu
  ``out=o``);
* ``in place``: ``NumbaBackend.fwht(x, out=x)``, FFHT ``fht_``, fht-cpu ``inplace=True`` (the
  buffer is refilled from the input before each call, untimed).

All arrays are 64-byte aligned (FFHT asks for 32; numpy's own 16-byte alignment makes half of the
vector loads straddle two cache lines and costs every implementation alike). FFHT takes one
vector per call: batches loop over rows in Python. hadamard-transform (pure torch) is normalized
and out of place; it runs up to 2^24 elements, while one call stays under ``--slow-budget`` seconds. Peers that are not
installed are skipped with the reason. OMP_WAIT_POLICY=passive keeps the OpenMP pools of
fht-cpu and numba from spinning against each other on few cores.

    python benchmarks/bench_fwht.py            # everything (about 10 minutes on 2 cores)
    python benchmarks/bench_fwht.py --quick    # small sizes, float32 (a smoke run)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before any OpenMP runtime starts

import argparse  # noqa: E402
import gc  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

#: the CPU array libraries whose sketchcore backends are timed (cupy arrays live on a GPU)
CPU_MODULES = ("numpy", "torch", "jax")


# ---- helpers shared with bench_backends.py -------------------------------------------------------
def sync(y) -> None:
    """Wait for an asynchronous result (jax); a no-op for eager libraries."""
    wait = getattr(y, "block_until_ready", None)
    if wait is not None:
        wait()


def median_ms(fn, repeat: int, budget_s: float = 20.0) -> tuple[float, int]:
    """Median wall time of ``fn()`` in ms over ``repeat`` runs after one untimed warm-up.
    Fewer runs (at least one) when the first timed run says ``repeat`` runs would take longer
    than ``budget_s``. Returns (median ms, runs)."""
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


def aligned(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialized array whose data starts on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    off = (-raw.__array_interface__["data"][0]) % align
    return raw[off : off + nbytes].view(dtype).reshape(shape)


class MinTimer:
    """Minimum wall time of a callable over interleaved rounds: each ``run`` adds up to ``reps``
    timed calls (fewer when one call is long: about ``round_s`` seconds per round), after an
    untimed warm-up the first time. ``prep`` (untimed) runs before every call."""

    def __init__(self, fn, prep=None, round_s: float = 0.08, max_reps: int = 200):
        self.fn, self.prep = fn, prep
        self.round_s, self.max_reps = round_s, max_reps
        self.best = float("inf")
        self.calls = 0
        self.first = None

    def _once(self) -> float:
        if self.prep is not None:
            self.prep()
        t0 = time.perf_counter()
        sync(self.fn())
        return time.perf_counter() - t0

    def run(self) -> None:
        if self.first is None:
            self.first = self._once()  # warm-up: compilation, first-touch of fresh pages
        reps = max(1, min(self.max_reps, int(self.round_s / max(self.first, 1e-7))))
        for _ in range(reps):
            self.best = min(self.best, self._once())
            self.calls += 1

    @property
    def ms(self) -> float:
        return self.best * 1e3


# ---- the contestants -----------------------------------------------------------------------------
def peers() -> tuple[dict, list[str]]:
    """Importable peer libraries and lines naming the missing ones."""
    found, missing = {}, []
    for name, module, pip in [
        ("FFHT", "ffht", "pybind11 && pip install --no-build-isolation ffht-unofficial"),
        ("fht-cpu", "fht_cpu", "fht-cpu"),
        ("hadamard-transform", "hadamard_transform", "hadamard-transform"),
    ]:
        try:
            found[name] = __import__(module)
        except Exception as err:  # noqa: BLE001 - report why, keep going
            missing.append(f"{name} skipped: {type(err).__name__}: {err} (pip install {pip})")
    return found, missing


def contestants(be, libs, x, threads):
    """(column name, callable, prep) for one case; ``x`` is (rows, n) or (n,)."""
    rows = x.reshape(-1, x.shape[-1])
    out = aligned(x.shape, x.dtype)
    buf = aligned(x.shape, x.dtype)
    buf2 = buf.reshape(-1, x.shape[-1])

    def refill():
        np.copyto(buf, x)

    cols = [
        ("ours new", lambda: be.fwht(x), None),
        ("ours out=", lambda: be.fwht(x, out=out), None),
        ("ours in place", lambda: be.fwht(buf, out=buf), refill),
    ]
    ffht = libs.get("FFHT")
    if ffht is not None:
        def ffht_new():
            return [ffht.fht(r, threads) for r in rows]

        def ffht_inplace():
            for r in buf2:
                ffht.fht_(r, threads)

        cols += [("FFHT new", ffht_new, None), ("FFHT in place", ffht_inplace, refill)]
    fc = libs.get("fht-cpu")
    if fc is not None:
        cols += [
            ("fht-cpu new", lambda: fc.fht(x, inplace=False, num_threads=threads), None),
            ("fht-cpu out=", lambda: fc.fht(x, out=out, num_threads=threads), None),
            ("fht-cpu in place", lambda: fc.fht(buf, inplace=True, num_threads=threads), refill),
        ]
    return cols


#: hadamard-transform (one torch.cat of the whole array per stage) runs up to this many elements
SLOW_PEER_MAX = 1 << 24
#: implementations dropped from a case once one call takes longer than --slow-budget
SLOW_PEERS = ("hadamard-transform",)


def torch_contestants(libs, x):
    """hadamard-transform on a torch view of ``x``, and sketchcore's torch backend (CPU
    tensors through the numba kernels)."""
    cols = []
    try:
        import torch
    except ImportError:
        return cols
    xt = torch.from_numpy(x)
    ht = libs.get("hadamard-transform")
    if ht is not None and x.size <= SLOW_PEER_MAX:
        cols.append(("hadamard-transform", lambda: ht.hadamard_transform(xt), None))
    try:
        import sketchcore as sk

        tb = sk.resolve_backend("torch", None)
        cols.append(("torch via numba", lambda: tb.fwht(xt), None))
    except Exception:  # noqa: BLE001 - no torch backend: nothing to add
        pass
    return cols


# ---- asm check -----------------------------------------------------------------------------------
def asm_summary() -> list[str]:
    """What LLVM emitted for the serial transform of one row (``fwht_row_plain`` with the
    butterflies it inlines, compiled afresh: numba's cache keeps no assembly): packed vs scalar
    floating-point add/sub/fma instructions and the vector registers they use."""
    import re

    import numba

    from sketchcore_numba import _fwht
    from sketchcore_numba._simd import VECTOR_BYTES

    opts = {k: v for k, v in _fwht.JIT.items() if k != "cache"}
    fresh = numba.njit(**opts)(_fwht.fwht_row_plain.py_func)
    parts = []
    for dtype in (np.float32, np.float64):
        x = np.zeros(64, dtype=dtype)
        fresh(x, 0, x, 0, 64)
        asm = fresh.inspect_asm(fresh.signatures[-1])
        sfx = "ps" if dtype == np.float32 else "pd"
        packed = re.findall(rf"\tv(?:add|sub|fmadd\w*){sfx}\t[^\n]*%([xyz])mm", asm)
        scalar = re.findall(rf"\tv(?:add|sub|fmadd\w*)s{sfx[1]}\t", asm)
        shuffles = re.findall(r"\tv(?:shuf|perm|unpck|blend)\w*\t[^\n]*%[yz]mm", asm)
        regs = ", ".join(f"{packed.count(r)} on {r}mm" for r in "zyx" if packed.count(r))
        parts.append(f"{np.dtype(dtype).name}: {len(packed)} packed add/sub/fma ({regs}), "
                     f"{len(shuffles)} vector shuffles, {len(scalar)} scalar add/sub (rows "
                     "shorter than a vector)")
    return [f"numba's LLVM output for one row (vectors of {VECTOR_BYTES} bytes): "
            + "; ".join(parts)]


# ---- main ----------------------------------------------------------------------------------------
def run_mode(be, libs, cases, dtype, threads, rounds, slow_budget, pin):
    import numba

    numba.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    old_aff = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    results = []
    try:
        for batch, log_n in cases:
            n = 1 << log_n
            shape = (batch, n) if batch > 1 else (n,)
            x = aligned(shape, dtype)
            x[...] = np.random.default_rng(log_n).standard_normal(shape)
            dst = aligned(shape, dtype)
            timers = {"copy": MinTimer(lambda: np.copyto(dst, x))}
            for name, fn, prep in contestants(be, libs, x, threads) + torch_contestants(libs, x):
                timers[name] = MinTimer(fn, prep)
            skipped = {}
            for _ in range(rounds):
                for name, t in timers.items():
                    if name in skipped:
                        continue
                    if name in SLOW_PEERS and t.first is not None and t.first > slow_budget:
                        skipped[name] = t.first
                        continue
                    t.run()
            label = f"{batch} x 2^{log_n}" if batch > 1 else f"2^{log_n}"
            results.append((label, timers, skipped))
            del x, dst, timers
            gc.collect()
    finally:
        if old_aff is not None:
            os.sched_setaffinity(0, old_aff)
    return results


def print_mode(results, dtype, threads, pin, rounds):
    names = []
    for _, timers, _ in results:
        names += [k for k in timers if k != "copy" and k not in names]
    where = f"pinned to CPU {pin}" if pin is not None else "unpinned"
    print(f"\n## {np.dtype(dtype).name}, {threads} thread{'s' if threads > 1 else ''} ({where}): "
          f"x copy = min-of-N time / min-of-N np.copyto time in the same {rounds} rounds "
          "(N: fewest timed calls of any implementation in the row)")
    short = {"ours new": "ours new", "ours out=": "ours out=", "ours in place": "ours inpl",
             "FFHT new": "FFHT new", "FFHT in place": "FFHT inpl", "fht-cpu new": "fhtcpu new",
             "fht-cpu out=": "fhtcpu out=", "fht-cpu in place": "fhtcpu inpl",
             "hadamard-transform": "hadtr(torch)", "torch via numba": "torch>numba"}
    head = f"{'size':<11}{'copy ms':>9}{'N':>5}" + "".join(f"{short.get(n, n):>13}" for n in names)
    head += f"{'inpl/FFHT':>11}{'out=/fhtcpu':>12}"
    print(head)
    for label, timers, skipped in results:
        copy = timers["copy"]
        cells = []
        for name in names:
            t = timers.get(name)
            if name in skipped:
                cells.append(f"{'(>' + format(skipped[name], '.0f') + 's)':>13}")
            elif t is None:
                cells.append(f"{'-':>13}")
            else:
                cells.append(f"{t.ms / copy.ms:>13.2f}")
        def ratio(a, b):
            ta, tb = timers.get(a), timers.get(b)
            if ta is None or tb is None or a in skipped or b in skipped:
                return float("nan")
            return ta.ms / tb.ms
        calls = min(t.calls for n, t in timers.items() if n not in skipped)  # N of min-of-N
        print(f"{label:<11}{copy.ms:>9.4f}{calls:>5}" + "".join(cells)
              + f"{ratio('ours in place', 'FFHT in place'):>11.2f}"
              + f"{ratio('ours out=', 'fht-cpu out='):>12.2f}")
    first = [(label, t["ours new"].ms - t["ours out="].ms) for label, t, _ in results]
    print("# first touch of a fresh result (ours new - ours out=, ms): "
          + ", ".join(f"{label} {d:.3f}" for label, d in first))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, float32 only")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--slow-budget", type=float, default=3.0,
                   help="stop timing hadamard-transform once one call takes longer (s)")
    args = p.parse_args(argv)
    import numba

    import sketchcore as sk

    be = sk.resolve_backend("numba", None)
    libs, missing = peers()
    if args.quick:
        cases = [(1, 10), (1, 14), (1, 16), (16, 12)]
        dtypes = ["float32"]
    else:
        cases = [(1, k) for k in range(10, 27, 2)] + [(64, 16), (32, 20)]
        dtypes = args.dtypes.split(",")
    all_threads = numba.get_num_threads()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
    pin = cpus[-1]
    print(f"# FWHT: sketchcore (numba) vs FFHT, fht-cpu, hadamard-transform; min-of-N timings in "
          f"{args.rounds} interleaved rounds; {machine_line()}")
    for line in missing:
        print(f"# {line}")
    for line in asm_summary():
        print(f"# {line}")
    be.fwht(np.ones((all_threads, 1 << 16), dtype=np.float32))  # start the thread pool unpinned
    modes = [(1, pin), (all_threads, None)] if all_threads > 1 else [(1, pin)]
    for dtype in dtypes:
        for threads, where in modes:
            res = run_mode(be, libs, cases, np.dtype(dtype), threads, args.rounds,
                           args.slow_budget, where)
            print_mode(res, dtype, threads, where, args.rounds)
            sys.stdout.flush()
    numba.set_num_threads(all_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
