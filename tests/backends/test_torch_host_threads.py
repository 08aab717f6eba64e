"""torch's intra-op thread count survives a sketch of CPU tensors on the numba host kernels.

numba's first parallel launch (OpenMP threading layer) sets the OpenMP thread count of the
libgomp it shares with torch; before the fix, ``torch.set_num_threads(1)`` was silently undone by
the first large enough sketch (the demo's training data attribution does one), and
small models then ran up to 40x slower on a busy 2-core machine. The
check needs a process where numba's pool has not been launched yet, hence the subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
numba = pytest.importorskip("numba")

CODE = """
import torch
torch.set_num_threads(1)
import numba
import sketchcore as sk
from sketchcore_torch import host
assert host.host_backend() is not None, "numba host kernels not in use"
op = sk.Sketch(algo="affd", in_dim=1 << 14, out_dim=512, seed=0)
x = torch.ones(64, 1 << 14)  # 2^20 elements: the numba passes run in parallel
op(x)
op.transpose(op(x))
print(torch.get_num_threads(), numba.threading_layer())
"""


def test_torch_threads_are_kept_across_host_kernels():
    env = {**os.environ, "SKETCHCORE_TORCH_HOST_KERNELS": "1"}
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    threads, layer = res.stdout.split()
    assert threads == "1", f"torch threads became {threads} (numba threading layer {layer})"

