"""Peak extra memory of one sketch application per backend, against the input it sketches.

Each case runs in a fresh process: a batch of 32 float32 rows of N = 2^22 (512 MiB), sketched to
D = 2^14 after a one-row warm-up (parameters materialized, JIT compiled); the figure is the rise
of the resident-set high-water mark (ru_maxrss) during the full-batch call. Structured sketches
should need only input + O(N) parameters + output + a bounded scratch (large batches are applied
a bounded number of rows at a time).

    python benchmarks/bench_memory.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = r'''
import resource, sys, numpy as np, sketchcore as sk
algo, backend = sys.argv[1], sys.argv[2]
x = np.random.default_rng(0).standard_normal((32, 2**22), dtype=np.float32)
xb = x
if backend == "torch":
    import torch
    xb = torch.from_numpy(x)
op = sk.Sketch(algo=algo, in_dim=2**22, out_dim=2**14, seed=0)
op.apply(xb[:1], backend=backend)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
y = op.apply(xb, backend=backend)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - base) / 1024, op.nbytes / 2**20)
'''


def main() -> None:
    import sketchcore as sk

    usable = {b.name for b in sk.backends() if b.usable}
    print("# extra MiB of one apply, batch 32 x 2^22 float32 (input 512 MiB), D = 2^14")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fwht import torch_route_line

    if torch_route_line():
        print(f"# {torch_route_line()}")
    print(f"{'backend':<7} {'algo':<5} {'extra MiB':>10} {'extra/input':>11} {'params MiB':>10}")
    for backend in ("numba", "numpy", "torch"):
        if backend not in usable:
            print(f"{backend:<7} (not usable here)")
            continue
        for algo in ("affd", "afjl", "qk"):
            out = subprocess.run([sys.executable, "-c", CHILD, algo, backend], capture_output=True,
                                 text=True)
            if out.returncode:
                print(f"{backend:<7} {algo:<5} failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            extra, params = map(float, out.stdout.split())
            print(f"{backend:<7} {algo:<5} {extra:>10.0f} {extra / 512:>11.2f} {params:>10.1f}")


if __name__ == "__main__":
    main()
