"""The whole reference path runs on array_api_strict arrays (proving the core uses only the
standard), and agrees with numpy."""

from __future__ import annotations

import numpy as np
import pytest

import sketchcore as sk
from core.helpers import CONFIG_IDS, CONFIGS, small_blocks

xps = pytest.importorskip("array_api_strict")


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_strict_matches_numpy(algo, options, dtype):
    n, d = 300, 40
    op = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=5, **small_blocks(algo, options))
    x = np.random.default_rng(0).standard_normal((2, 3, n)).astype(dtype)
    y = np.random.default_rng(1).standard_normal((2, 3, d)).astype(dtype)
    with xps.ArrayAPIStrictFlags(boolean_indexing=False, data_dependent_shapes=False):
        xs, ys = xps.asarray(x), xps.asarray(y)
        fwd, adj = op(xs), op.transpose(ys)
        assert type(fwd) is type(xs) and fwd.dtype == xs.dtype and fwd.shape == (2, 3, d)
        assert type(adj) is type(ys) and adj.shape == (2, 3, n)
    tol = 1e-5 if dtype == "float32" else 1e-12
    ref = op.apply(x, backend="numpy")
    np.testing.assert_allclose(np.asarray(fwd), ref, rtol=tol, atol=tol * np.abs(ref).max())
    ref_t = op.transpose(y, backend="numpy")
    np.testing.assert_allclose(np.asarray(adj), ref_t, rtol=tol, atol=tol * np.abs(ref_t).max())
