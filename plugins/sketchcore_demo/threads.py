"""torch's intra-op thread count for the length of a block, restored afterwards.

The demo's model has about 10k parameters: its ops are too small to gain from a second thread,
and with two threads each parallel op waits for both to be scheduled, so when another process
holds a core every op waits for a time slice. Measured on 2 cores at load average 5
(benchmarks/bench_demo_threads.py), two threads against one: full fine-tuning 6 vs 321 steps/s,
subspace training 19 vs 325 steps/s, an exact Hessian-vector product 322 vs 75 ms.
"""

from __future__ import annotations

from contextlib import contextmanager

from sketchcore import InvalidOptionError

__all__ = ["torch_threads"]


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None: leave torch's setting)."""
    import torch

    if n is None:
        yield torch.get_num_threads()
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidOptionError(
            f"threads must be a positive integer or None (torch's default), got {n!r}; "
            "1 is fastest for the demo's small model.")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
