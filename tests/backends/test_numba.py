"""The numba backend: kernels against the reference kernels, every sketch against the numpy
backend, registry resolution, and the import-time promise (importing it does not import numba).

The kernels only go parallel above a size threshold and cut Kronecker gathers into runs of up to
2^11 elements; the ``passes`` fixture shrinks those limits so that small hypothesis cases run
through every code path (one row on all threads, rows in parallel, short gather runs).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba", reason="the numba backend needs numba (pip install numba)")

import array_api_compat.numpy as xnp  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import sketchcore as sk  # noqa: E402
from sketchcore import kernels  # noqa: E402
from sketchcore.backend import Backend  # noqa: E402
from sketchcore.sketches.preconditioners import PRECONDITIONERS  # noqa: E402
from sketchcore.kron_plans import KronPlan  # noqa: E402

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
REF = Backend(xnp)


@pytest.fixture(scope="module")
def nbe():
    info = {b.name: b for b in sk.backends()}.get("numba")
    if info is None or not info.usable:
        pytest.skip(f"numba backend not usable here: {info.reason if info else 'not registered'}")
    return sk.resolve_backend("numba", None)


@pytest.fixture(params=["default", "small"])
def passes(request, monkeypatch):
    """Run with the real thresholds, and with tiny ones that send small inputs through every
    code path: all threads on one row (sub-blocks, then the top level split by columns), rows in
    parallel, and Kronecker gathers cut into short runs."""
    from sketchcore_numba import _kernels, _ops

    if request.param == "small":
        monkeypatch.setattr(_kernels, "PARALLEL_MIN", 0)
        monkeypatch.setattr(_kernels, "PARALLEL_ROW_MIN", 64)
        monkeypatch.setattr(_kernels, "RUN_MAX", 8)
        monkeypatch.setattr(_ops, "PARALLEL_MIN", 0)
        monkeypatch.setattr(_ops, "PARALLEL_ROW_MIN", 64)
    _kernels._TABLES.clear()
    yield request.param
    _kernels._TABLES.clear()


def close(actual, expected, dtype, scale=1.0):
    """Equal to the dtype's tolerance, relative to the size of the values compared."""
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    mag = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300) * scale
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * mag)


#: the ``passes`` fixture is set once per test function, not per example, on purpose
fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
dtypes = st.sampled_from([np.float32, np.float64])
batch_shapes = st.lists(st.integers(0, 3), max_size=2).map(tuple)


# ---- fwht ---------------------------------------------------------------------------------------
@fixture_ok
@given(log_n=st.integers(0, 14), batch=batch_shapes, dtype=dtypes, seed=st.integers(0, 2**32 - 1))
def test_fwht_equals_reference(nbe, passes, log_n, batch, dtype, seed):
    x = np.random.default_rng(seed).standard_normal((*batch, 1 << log_n)).astype(dtype)
    before = x.copy()
    y = nbe.fwht(x)
    close(y, kernels.fwht(xnp, x), dtype)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("log_n", [0, 1, 3, 4, 5, 7, 10])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fwht_equals_dense_hadamard(nbe, passes, log_n, dtype):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    n = 1 << log_n
    x = np.random.default_rng(log_n).standard_normal((3, n)).astype(dtype)
    h = scipy_linalg.hadamard(n).astype(np.float64)
    close(nbe.fwht(x), (x.astype(np.float64) @ h.T).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fwht_large_multi_pass(nbe, dtype):
    """2^20: base blocks and three depth-first levels above them; H H x = n x."""
    n = 1 << 20
    x = np.random.default_rng(1).standard_normal((2, n)).astype(dtype)
    y = nbe.fwht(x)
    close(y, kernels.fwht(xnp, x), dtype)
    close(nbe.fwht(y), x * n, dtype)


def test_fwht_non_contiguous_and_rejects_bad_lengths(nbe):
    base = np.random.default_rng(2).standard_normal((6, 64))
    for x in (base[::2], base[:, ::2], base.T.copy().T, base.reshape(6, 8, 8).transpose(1, 0, 2)):
        before = x.copy()
        close(nbe.fwht(x), kernels.fwht(xnp, np.ascontiguousarray(x)), np.float64)
        np.testing.assert_array_equal(x, before)
    with pytest.raises(ValueError, match="power-of-two"):
        nbe.fwht(np.ones((2, 12)))
    with pytest.raises(ValueError, match="power-of-two"):
        nbe.fwht(np.ones((2, 0)))


# ---- hadamard -----------------------------------------------------------------------------------
@st.composite
def kron_plans(draw):
    logs = draw(st.lists(st.integers(0, 5), min_size=1, max_size=4).filter(lambda v: sum(v) <= 14))
    sizes = [1 << v for v in logs]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def perms():
        return [rng.permutation(s) if draw(st.booleans()) else None for s in sizes]

    return KronPlan(sizes, row_perm=perms(), col_perm=perms())


@fixture_ok
@given(plan=kron_plans(), batch=batch_shapes, dtype=dtypes, with_diag=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_hadamard_equals_reference(nbe, passes, plan, batch, dtype, with_diag, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*batch, plan.n)).astype(dtype)
    diag = rng.standard_normal(plan.n).astype(dtype) if with_diag else None
    before = x.copy()
    dbefore = None if diag is None else diag.copy()
    y = nbe.hadamard(x, plan, diag=diag)
    close(y, REF.hadamard_butterfly(x, plan, diag=diag), dtype)
    np.testing.assert_array_equal(x, before)
    if diag is not None:
        np.testing.assert_array_equal(diag, dbefore)
    # the transpose plan undoes the transform (M is orthogonal)
    if diag is None:
        close(nbe.hadamard(y, plan.transpose()), x, dtype, scale=4.0)


@pytest.mark.parametrize(
    "sizes", [(256, 256, 4), (1024, 1024), (2, 2048, 64), (65536, 4), (8, 131072)]
)
def test_hadamard_large_plans(nbe, sizes):
    """Long plans: permuted factors gathered in runs into the base blocks (columns) and from the
    transformed rows (rows)."""
    rng = np.random.default_rng(len(sizes))
    plan = KronPlan(sizes, row_perm=[rng.permutation(s) for s in sizes],
                    col_perm=[rng.permutation(s) if s < 4096 else None for s in sizes])
    x = rng.standard_normal((2, plan.n)).astype(np.float32)
    d = rng.standard_normal(plan.n).astype(np.float32)
    close(nbe.hadamard(x, plan, diag=d), REF.hadamard_butterfly(x, plan, diag=d), np.float32)


def test_hadamard_diag_forms_and_errors(nbe):
    rng = np.random.default_rng(3)
    plan = KronPlan((4, 8), row_perm=[rng.permutation(4), None])
    x = rng.standard_normal((3, 32))
    for diag in (2.5, np.float64(-1.0), rng.standard_normal((3, 32)), rng.standard_normal(32)):
        close(nbe.hadamard(x, plan, diag=diag), REF.hadamard_butterfly(x, plan, diag=diag),
              np.float64)
    with pytest.raises(ValueError, match="plan's length 32"):
        nbe.hadamard(np.ones((2, 16)), plan)


# ---- ell_matvec ---------------------------------------------------------------------------------
@given(n=st.integers(1, 300), rows=st.integers(0, 40), slots=st.integers(1, 6), batch=batch_shapes,
       dtype=dtypes, seed=st.integers(0, 2**32 - 1))
def test_ell_matvec_equals_reference(nbe, n, rows, slots, batch, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*batch, n)).astype(dtype)
    idx = rng.integers(-n, n, size=(rows, slots))
    vals = rng.standard_normal((rows, slots)).astype(dtype)
    before = x.copy()
    close(nbe.ell_matvec(x, idx, vals), REF.ell_matvec(x, idx, vals), dtype)
    np.testing.assert_array_equal(x, before)


def test_ell_matvec_large_parallel(nbe):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 1 << 16)).astype(np.float32)
    idx = rng.integers(0, 1 << 16, size=(5000, 16))
    vals = rng.standard_normal((5000, 16)).astype(np.float32)
    close(nbe.ell_matvec(x, idx, vals), REF.ell_matvec(x, idx, vals), np.float32)


def test_ell_matvec_rejects_out_of_range(nbe):
    with pytest.raises(IndexError, match=r"outside \[-4, 4\)"):
        nbe.ell_matvec(np.ones((2, 4)), np.array([[0, 4]]), np.ones((1, 2)))


# ---- every sketch, through the public API -------------------------------------------------------
def _variants():
    out = []
    for algo in sk.algorithms():
        if algo in ("affd", "afjl"):
            for pre in PRECONDITIONERS:
                out.append(pytest.param(algo, {"preconditioner": pre, "max_block": 16},
                                        id=f"{algo}-{pre}"))
        else:
            out.append(pytest.param(algo, {}, id=algo))
    return out


@pytest.mark.parametrize("algo,options", _variants())
@pytest.mark.parametrize("in_dim,out_dim", [(1000, 37), (4096, 256), (70000, 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sketch_matches_numpy_backend(nbe, algo, options, in_dim, out_dim, dtype):
    if algo == "dense" and in_dim > 4096:
        pytest.skip("the dense baseline adds nothing at this size and costs seconds")
    op = sk.Sketch(algo=algo, in_dim=in_dim, out_dim=out_dim, seed=7, **options)
    rng = np.random.default_rng(in_dim)
    x = rng.standard_normal((2, in_dim)).astype(dtype)
    y = rng.standard_normal((3, out_dim)).astype(dtype)
    xb, yb = x.copy(), y.copy()
    close(op.apply(x, backend="numba"), op.apply(x, backend="numpy"), dtype)
    close(op.transpose(y, backend="numba"), op.transpose(y, backend="numpy"), dtype)
    np.testing.assert_array_equal(x, xb)
    np.testing.assert_array_equal(y, yb)


# ---- registration -------------------------------------------------------------------------------
def test_numpy_arrays_default_to_numba(nbe, monkeypatch):
    x = np.random.default_rng(5).standard_normal((2, 300)).astype(np.float32)
    assert sk.resolve_backend(None, x) is nbe
    calls = []
    original = nbe.apply_op

    def spy(op, direction, arr):
        calls.append((op.name, direction, arr.shape))
        return original(op, direction, arr)

    monkeypatch.setattr(nbe, "apply_op", spy)
    y = sk.sketch(x, algo="afjl", out_dim=16, seed=3)
    assert calls, "sk.sketch on a numpy array did not run the numba backend"
    close(y, sk.sketch(x, algo="afjl", out_dim=16, seed=3, backend="numpy"), np.float32)


def test_backend_metadata(nbe):
    info = {b.name: b for b in sk.backends()}["numba"]
    assert (info.usable, info.priority, info.array_module) == (True, 10, "numpy")
    assert nbe.namespace() is xnp
    assert nbe.owns(np.zeros(2)) and nbe.owns(np.float32(1)) and not nbe.owns([1.0])
    # other dtypes fall back to the reference kernels
    xi = np.arange(8, dtype=np.int64)
    np.testing.assert_array_equal(nbe.fwht(xi), kernels.fwht(xnp, xi))


def test_import_does_not_import_numba():
    code = (
        "import sys, sketchcore_numba\n"
        "assert 'numba' not in sys.modules, 'importing sketchcore_numba imported numba'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_conformance_suite(nbe):
    testing = pytest.importorskip("sketchcore.testing")
    assert testing.check_backend("numba") > 0


def test_fwht_bitwise_independent_of_threads(nbe, monkeypatch):
    """Serial, rows in parallel and one row split among threads run the same butterflies in the
    same order: bitwise equal results."""
    from sketchcore_numba import _kernels

    x = np.random.default_rng(6).standard_normal((3, 1 << 15)).astype(np.float32)
    serial = nbe.fwht(x)
    monkeypatch.setattr(_kernels, "PARALLEL_MIN", 0)
    monkeypatch.setattr(_kernels, "PARALLEL_ROW_MIN", 1 << 10)
    np.testing.assert_array_equal(nbe.fwht(x), serial)  # rows in parallel
    np.testing.assert_array_equal(nbe.fwht(x[:1]), serial[:1])  # one row on all threads
