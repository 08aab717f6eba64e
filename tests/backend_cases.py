"""What the framework backend tests (torch, jax) share: the hypothesis draws they compare against
the numpy reference, and that comparison."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import strategies as st

from core.helpers import assert_normwise_close
from sketchcore.kron_plans import next_pow2
from sketchcore.testing import algorithm_variants

VARIANTS = algorithm_variants()
IDS = [f"{a}-{o['preconditioner']}" if o else a for a, o in VARIANTS]
SIZES = [1, 3, 17, 64, 100, 257, 1000, 1024, 2500]


@st.composite
def sketch_cases(draw, dtypes=None):
    """(algo, options, N, D, batch shape, seed), plus a dtype drawn from ``dtypes`` when given,
    over every algorithm x preconditioner."""
    algo, opts = draw(st.sampled_from(VARIANTS))
    opts = dict(opts)
    n = draw(st.sampled_from(SIZES))
    d = draw(st.integers(1, min(next_pow2(n), 96)))
    if "preconditioner" in opts:
        opts["max_block"] = draw(st.sampled_from([4, 16, 1024]))
    batch = draw(st.sampled_from([(), (3,), (2, 2)]))
    seed = draw(st.integers(0, 2**64 - 1))
    case = (algo, opts, n, d, batch, seed)
    return case if dtypes is None else (*case, draw(st.sampled_from(dtypes)))


def assert_matches_reference(op, x, y, got, got_t, rtol) -> None:
    """A backend's ``op.apply(x)`` and ``op.transpose(y)`` equal the numpy reference's, normwise
    and relative to the typical output entry ``||x|| / sqrt(D)`` per row at least (with D = 1 the
    single output can itself be a near-cancellation)."""
    rows = max(1, int(np.prod(x.shape[:-1])))
    per = np.sqrt(op.out_dim * rows)
    assert_normwise_close(np.asarray(got), op.apply(x, backend="numpy"), rtol,
                          floor=float(np.linalg.norm(x)) / per)
    assert_normwise_close(np.asarray(got_t), op.transpose(y, backend="numpy"), rtol,
                          floor=float(np.linalg.norm(y)) / per)


def assert_import_is_light(plugin: str, library: str) -> None:
    """Importing the backend plugin and loading the registry does not import its array library
    (checked in a fresh interpreter)."""
    code = (f"import sys, {plugin}\n"
            "from sketchcore.registry import registry\n"
            "registry()\n"
            f"assert {library!r} not in sys.modules, '{library} imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
