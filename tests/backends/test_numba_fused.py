"""The numba backend's newer entry points against the reference (the numpy/array-API path):
the depth-first FWHT (out of place, into ``out``, in place, with fused signs), the permuted
Hadamard, and the fused affd/afjl forward passes of ``apply_op``, over sizes, dtypes, batch
shapes, options and thread layouts; plus the no-allocation promise of the hot path.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

pytest.importorskip("numba", reason="the numba backend needs numba (pip install numba)")

import array_api_compat.numpy as xnp  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import sketchcore as sk  # noqa: E402
from sketchcore import kernels  # noqa: E402
from sketchcore.backend import Backend  # noqa: E402
from sketchcore.kron_plans import KronPlan  # noqa: E402

RTOL = {np.float32: 2e-5, np.float64: 1e-12}
REF = Backend(xnp)
#: hypothesis: first calls compile kernels (seconds); the layout fixture is per test on purpose
SETTINGS = settings(deadline=None, max_examples=40,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
dtypes = st.sampled_from([np.float32, np.float64])
batch_shapes = st.lists(st.integers(0, 3), max_size=2).map(tuple)


@pytest.fixture(scope="module")
def nbe():
    info = {b.name: b for b in sk.backends()}.get("numba")
    if info is None or not info.usable:
        pytest.skip(f"numba backend not usable here: {info.reason if info else 'not registered'}")
    return sk.resolve_backend("numba", None)


@pytest.fixture(params=["serial", "threads"])
def layout(request, monkeypatch):
    """Default thresholds (small inputs: one thread), or none at all: rows in parallel, a single
    row split among all threads, and short Kronecker gather runs."""
    from sketchcore_numba import _kernels, _ops

    if request.param == "threads":
        monkeypatch.setattr(_kernels, "PARALLEL_MIN", 0)
        monkeypatch.setattr(_kernels, "PARALLEL_ROW_MIN", 64)
        monkeypatch.setattr(_kernels, "RUN_MAX", 8)
        monkeypatch.setattr(_ops, "PARALLEL_MIN", 0)
        monkeypatch.setattr(_ops, "PARALLEL_ROW_MIN", 64)
    _kernels._TABLES.clear()
    yield request.param
    _kernels._TABLES.clear()


def close(actual, expected, dtype):
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    mag = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * mag)


# ---- fwht ---------------------------------------------------------------------------------------
@SETTINGS
@given(log_n=st.integers(0, 15), batch=batch_shapes, dtype=dtypes,
       where=st.sampled_from(["new", "out", "inplace"]), seed=st.integers(0, 2**32 - 1))
def test_fwht_every_form_equals_reference(nbe, layout, log_n, batch, dtype, where, seed):
    x = np.random.default_rng(seed).standard_normal((*batch, 1 << log_n)).astype(dtype)
    expected = kernels.fwht(xnp, x)
    before = x.copy()
    if where == "new":
        y = nbe.fwht(x)
        np.testing.assert_array_equal(x, before)
    elif where == "out":
        out = np.full_like(x, np.nan)
        y = nbe.fwht(x, out=out)
        assert y is out
        np.testing.assert_array_equal(x, before)
    else:
        y = nbe.fwht(x, out=x)
        assert y is x
    close(y, expected, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("log_n", [13, 16, 18])
def test_fwht_depth_first_levels(nbe, layout, dtype, log_n):
    """Lengths with one, two and three levels above the base block; ``H H x = n x``."""
    x = np.random.default_rng(log_n).standard_normal((2, 1 << log_n)).astype(dtype)
    y = nbe.fwht(x)
    close(y, kernels.fwht(xnp, x), dtype)
    close(nbe.fwht(y, out=y), x * (1 << log_n), dtype)


@SETTINGS
@given(log_n=st.integers(0, 14), rows=st.integers(1, 3), dtype=dtypes,
       seed=st.integers(0, 2**32 - 1))
def test_fwht_fused_signs_equal_reference(nbe, layout, log_n, rows, dtype, seed):
    """The sign-flipping first sweep (``bits``, as the fused sketches use it)."""
    from sketchcore_numba import _kernels, _simd

    n = 1 << log_n
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)).astype(dtype)
    neg = rng.integers(0, 2, n).astype(bool)
    bits = np.packbits(neg, bitorder="little")
    y = np.empty_like(x)
    _kernels.fwht_flat(y.reshape(-1), x.reshape(-1), rows, n, bits, _simd.sign_lut(dtype), True)
    close(y, kernels.fwht(xnp, x * np.where(neg, -1.0, 1.0).astype(dtype)), dtype)


def test_fwht_out_is_checked(nbe):
    x = np.ones((2, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        nbe.fwht(x, out=np.empty((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="dtype"):
        nbe.fwht(x, out=np.empty((2, 8), dtype=np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        nbe.fwht(x, out=np.empty((8, 2), dtype=np.float32).T)
    big = np.ones(24, dtype=np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        nbe.fwht(big[:16].reshape(2, 8), out=big[8:].reshape(2, 8))
    with pytest.raises(ValueError, match="float32/float64"):
        nbe.fwht(np.arange(8), out=np.empty(8))


def test_fwht_results_are_aligned(nbe):
    """Results large enough to leave L1 start on a cache line (no split vector loads)."""
    y = nbe.fwht(np.ones((3, 1 << 15), dtype=np.float32))
    assert y.__array_interface__["data"][0] % 64 == 0
    assert y.flags.c_contiguous and y.flags.writeable


# ---- hadamard -----------------------------------------------------------------------------------
@st.composite
def kron_plans(draw):
    logs = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4).filter(lambda v: sum(v) <= 15))
    sizes = [1 << v for v in logs]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def perms():
        return [rng.permutation(s) if draw(st.booleans()) else None for s in sizes]

    return KronPlan(sizes, row_perm=perms(), col_perm=perms())


@SETTINGS
@given(plan=kron_plans(), batch=batch_shapes, dtype=dtypes,
       diag=st.sampled_from(["none", "vector", "scalar", "batched"]),
       seed=st.integers(0, 2**32 - 1))
def test_hadamard_equals_reference(nbe, layout, plan, batch, dtype, diag, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*batch, plan.n)).astype(dtype)
    d = {"none": None, "vector": rng.standard_normal(plan.n).astype(dtype),
         "scalar": dtype(1.5), "batched": rng.standard_normal((*batch, plan.n)).astype(dtype)}[diag]
    before = x.copy()
    close(nbe.hadamard(x, plan, diag=d), REF.hadamard_butterfly(x, plan, diag=d), dtype)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("sizes", [(4096,), (8192, 2), (1024, 1024), (16, 4096, 4)])
def test_hadamard_long_factors(nbe, layout, sizes):
    """Factors longer than a gather run (2^11): permuted runs that span several base blocks."""
    rng = np.random.default_rng(len(sizes))
    plan = KronPlan(sizes, row_perm=[rng.permutation(s) for s in sizes],
                    col_perm=[rng.permutation(s) for s in sizes])
    x = rng.standard_normal((2, plan.n)).astype(np.float32)
    d = rng.standard_normal(plan.n).astype(np.float32)
    close(nbe.hadamard(x, plan, diag=d), REF.hadamard_butterfly(x, plan, diag=d), np.float32)


# ---- fused affd / afjl --------------------------------------------------------------------------
@st.composite
def fused_cases(draw):
    log_n = draw(st.integers(6, 15))
    short = (1 << log_n) - draw(st.integers(1, 1 << (log_n - 2)))
    in_dim = draw(st.sampled_from([1 << log_n, short]))
    n_pad = 1 << (in_dim - 1).bit_length()
    out_dim = draw(st.sampled_from([1, 7, 64, 100, 1 << (log_n // 2), n_pad // 2, n_pad]))
    out_dim = max(1, min(out_dim, n_pad))
    max_block = 1 << draw(st.integers(1, 11))
    return in_dim, out_dim, max_block


@SETTINGS
@given(algo=st.sampled_from(["affd", "afjl"]), case=fused_cases(), batch=batch_shapes,
       dtype=dtypes, seed=st.integers(0, 2**32 - 1))
def test_fused_forward_equals_reference(nbe, layout, algo, case, batch, dtype, seed):
    in_dim, out_dim, max_block = case
    op = sk.Sketch(algo=algo, in_dim=in_dim, out_dim=out_dim, seed=seed % 1000,
                   max_block=max_block)
    x = np.random.default_rng(seed).standard_normal((*batch, in_dim)).astype(dtype)
    before = x.copy()
    y = op.apply(x, backend="numba")
    close(y, op.apply(x, backend="numpy"), dtype)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("algo", ["affd", "afjl"])
@pytest.mark.parametrize("log_n,log_d", [(17, 6), (18, 12), (18, 14), (18, 18)])
def test_fused_forward_long_rows(nbe, layout, algo, log_n, log_d):
    """Rows long enough for several depth-first levels, one and three rows (a single row is
    split among threads in the ``threads`` layout), default max_block."""
    op = sk.Sketch(algo=algo, in_dim=1 << log_n, out_dim=1 << log_d, seed=1)
    for rows in (1, 3):
        x = np.random.default_rng(rows).standard_normal((rows, 1 << log_n)).astype(np.float32)
        close(op.apply(x, backend="numba"), op.apply(x, backend="numpy"), np.float32)


def test_fused_path_is_taken_and_others_fall_back(nbe, monkeypatch):
    from sketchcore_numba import _ops

    import sketchcore_numba

    seen = []

    def spy(op, x):
        y = _ops.apply(op, x)
        seen.append((op.name, op.options.get("preconditioner"), y is not None))
        return y

    monkeypatch.setitem(sketchcore_numba._KERNELS, "fused_apply", spy)
    x = np.random.default_rng(0).standard_normal((2, 3000)).astype(np.float32)
    for algo, pre in [("affd", "hadamard"), ("afjl", "hadamard"), ("affd", "fft"), ("afjl", "q")]:
        op = sk.Sketch(algo=algo, in_dim=3000, out_dim=50, seed=4, preconditioner=pre,
                       max_block=64)
        close(op.apply(x, backend="numba"), op.apply(x, backend="numpy"), np.float32)
        y = np.random.default_rng(1).standard_normal((2, 50)).astype(np.float32)
        close(op.transpose(y, backend="numba"), op.transpose(y, backend="numpy"), np.float32)
    assert seen == [("affd", "hadamard", True), ("afjl", "hadamard", True),
                    ("affd", "fft", False), ("afjl", "q", False)]


@pytest.mark.parametrize("algo", ["affd", "afjl"])
def test_fused_forward_allocates_only_its_output(nbe, algo):
    """After a warm-up call, a call allocates its output and nothing of the input's size: the
    transform's scratch is kept per thread."""
    n, d, rows = 1 << 16, 1 << 8, 4
    op = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=2)
    x = np.random.default_rng(3).standard_normal((rows, n)).astype(np.float32)
    op.apply(x, backend="numba")
    tracemalloc.start()
    try:
        op.apply(x, backend="numba")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < rows * d * 4 + 64 * 1024, f"{algo}: {peak} bytes for a {rows}x{d} result"


# ---- jax CPU arrays through the host kernels ----------------------------------------------------
@pytest.fixture(scope="module")
def jax_be():
    info = {b.name: b for b in sk.backends()}.get("jax")
    if info is None or not info.usable:
        pytest.skip(f"jax backend not usable here: {info.reason if info else 'not registered'}")
    return sk.resolve_backend("jax", None)


@pytest.mark.parametrize("algo", ["affd", "afjl"])
def test_jax_eager_uses_host_kernels_jit_keeps_xla(nbe, jax_be, algo, monkeypatch):
    import jax
    import jax.numpy as jnp
    from sketchcore_jax import host

    op = sk.Sketch(algo=algo, in_dim=3000, out_dim=64, seed=5)
    xn = np.random.default_rng(7).standard_normal((3, 3000)).astype(np.float32)
    x = jnp.asarray(xn)
    calls = []
    original = nbe.apply_op

    def spy(impl, direction, arr):
        calls.append(type(arr).__name__)
        return original(impl, direction, arr)

    monkeypatch.setattr(nbe, "apply_op", spy)
    y = op.apply(x)  # eager: the host kernels
    assert isinstance(y, jax.Array) and y.dtype == jnp.float32 and calls == ["ndarray"]
    close(np.asarray(y), op.apply(xn, backend="numpy"), np.float32)
    y_jit = jax.jit(lambda a: op.apply(a))(x)  # traced: the XLA program
    assert calls == ["ndarray"]
    close(np.asarray(y_jit), np.asarray(y), np.float32)
    g = jax.grad(lambda a: op.apply(a).sum())(x)  # differentiable as before
    assert g.shape == x.shape
    monkeypatch.setenv("SKETCHCORE_JAX_HOST_KERNELS", "0")
    op.apply(x)
    assert calls == ["ndarray"]
    assert not host.enabled()


def test_jax_host_callback_under_jit_and_vmap(nbe, jax_be):
    import jax
    import jax.numpy as jnp
    from sketchcore_jax.host import host_callback

    op = sk.Sketch(algo="affd", in_dim=1024, out_dim=32, seed=6)
    xn = np.random.default_rng(8).standard_normal((2, 3, 1024)).astype(np.float32)
    expected = op.apply(xn, backend="numpy")
    f = host_callback(op)
    close(np.asarray(jax.jit(f)(jnp.asarray(xn))), expected, np.float32)
    close(np.asarray(jax.vmap(f)(jnp.asarray(xn))), expected, np.float32)
