"""Algebraic properties of every sketch on the numpy reference backend, driven by hypothesis:
adjoint identity, linearity, determinism, seed sensitivity, batching, shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sketchcore as sk
from core.helpers import CONFIG_IDS, CONFIGS, RTOL, adjoint_gap, small_blocks

in_dims = st.one_of(st.integers(1, 300), st.sampled_from([64, 128, 256, 512, 1000, 1024]))
dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**64 - 1)
batch_shapes = st.sampled_from([(), (1,), (3,), (2, 3), (0,)])


def _case(data, algo, options):
    n = data.draw(in_dims, label="in_dim")
    limit = n if algo == "dense" else 1 << (n - 1).bit_length()
    d = data.draw(st.integers(1, min(limit, 256)), label="out_dim")
    seed = data.draw(seeds, label="seed")
    op = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=seed, backend="numpy",
                   **small_blocks(algo, options))
    return op, n, d, seed


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
@given(data=st.data(), dtype=dtypes)
def test_adjoint_identity(algo, options, data, dtype):
    op, n, d, _ = _case(data, algo, options)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((2, n)).astype(dtype)
    y = rng.standard_normal((2, d)).astype(dtype)
    # a sum of n*d-ish products in fp: the gap scales with sqrt of the terms' count
    tol = RTOL[dtype] * max(1.0, np.sqrt(max(n, d)) / 8)
    assert adjoint_gap(op, x, y) <= tol
    assert op(x).dtype == dtype and op.transpose(y).dtype == dtype


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
@given(data=st.data())
def test_linearity(algo, options, data):
    op, n, d, _ = _case(data, algo, options)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, n))
    a, b = data.draw(st.floats(-3, 3)), data.draw(st.floats(-3, 3))
    lhs = op(a * x + b * y)
    rhs = a * op(x) + b * op(y)
    scale = np.abs(a) * np.linalg.norm(op(x)) + np.abs(b) * np.linalg.norm(op(y)) + 1e-12
    assert np.linalg.norm(lhs - rhs) <= 1e-10 * scale


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
@given(data=st.data())
def test_determinism_and_seed_sensitivity(algo, options, data):
    op, n, d, seed = _case(data, algo, options)
    x = np.random.default_rng(2).standard_normal(n)
    same = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=seed, **small_blocks(algo, options))
    np.testing.assert_array_equal(op(x), same.apply(x, backend="numpy"))
    other = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=(seed + 1) % 2**64,
                      **small_blocks(algo, options))
    # different seeds give different maps: the chance that two independent random maps agree on
    # a Gaussian input is zero (dense/qk/ffd/...), except trivial 1x1 cases where the map is +-x
    if n * d > 2:
        assert not np.allclose(op(x), other.apply(x, backend="numpy"))


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
@given(data=st.data(), batch=batch_shapes)
def test_batching_equals_looping_and_shapes(algo, options, data, batch):
    op, n, d, _ = _case(data, algo, options)
    x = np.random.default_rng(3).standard_normal((*batch, n))
    y = op(x)
    assert y.shape == (*batch, d)
    assert op.transpose(y).shape == (*batch, n)
    flat = x.reshape(-1, n)
    looped = np.stack([op(row) for row in flat]) if flat.shape[0] else np.zeros((0, d))
    np.testing.assert_allclose(y.reshape(-1, d), looped, rtol=1e-12, atol=1e-12)


def test_sketch_function_matches_operator():
    x = np.random.default_rng(4).standard_normal((3, 777))
    op = sk.Sketch(algo="affd", in_dim=777, out_dim=100, seed=9)
    np.testing.assert_allclose(sk.sketch(x, algo="affd", out_dim=100, seed=9), op(x), rtol=1e-12)


def test_qk_square_factors_are_orthogonal():
    """QK with D = N (square Haar factors) is an orthogonal map: it preserves every norm."""
    op = sk.Sketch(algo="qk", in_dim=1024, out_dim=1024, seed=0)
    x = np.random.default_rng(5).standard_normal((4, 1024))
    np.testing.assert_allclose(np.linalg.norm(op(x), axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=1e-12)
    np.testing.assert_allclose(op.transpose(op(x)), x, atol=1e-12)


def test_options_are_resolved_and_described():
    op = sk.Sketch(algo="qk", in_dim=5000, out_dim=300, seed=1)
    assert op.options["in_factors"] == (128, 64) and op.options["out_factors"] == (32, 16)
    desc = op.describe()
    assert desc["algo"] == "qk" and desc["options"]["in_factors"] == [128, 64]
    assert sk.Sketch(algo="affd", in_dim=2**22, out_dim=8, seed=0).algorithm.pre1.plan.sizes == (
        256, 128, 128)


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
def test_large_batches_run_in_row_chunks_with_identical_results(algo, options):
    """Big batches are applied a bounded number of rows at a time (bounded scratch memory);
    rows are independent, so chunking must not change a single bit."""
    op = sk.Sketch(algo=algo, in_dim=1000, out_dim=64, seed=1, **options)
    x = np.random.default_rng(0).standard_normal((5, 7, 1000))
    y = np.random.default_rng(1).standard_normal((5, 7, 64))
    whole, whole_t = op(x), op.transpose(y)
    op.algorithm.SCRATCH_ELEMENTS = 3 * 1024  # three rows per call
    if algo != "dense":
        assert op.algorithm.rows_per_call() == 3
    np.testing.assert_array_equal(op(x), whole)
    np.testing.assert_array_equal(op.transpose(y), whole_t)
