"""The jax backend: equal to the numpy reference, one cached jit program per operator and
direction, usable inside the caller's jit, grad and vmap, and registered without importing jax."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import sketchcore as sk  # noqa: E402
from core.helpers import assert_normwise_close  # noqa: E402
from backend_cases import (IDS, VARIANTS, assert_import_is_light,  # noqa: E402
                           assert_matches_reference, sketch_cases)
from sketchcore.kron_plans import KronPlan  # noqa: E402
from sketchcore.testing import check_backend  # noqa: E402



def _backend():
    return sk.resolve_backend("jax", None)


_close = assert_normwise_close


def test_import_does_not_load_jax():
    assert_import_is_light("sketchcore_jax", "jax")


def test_registered_and_picked_for_jax_arrays():
    info = {b.name: b for b in sk.backends()}["jax"]
    assert info.usable, info.reason
    assert info.priority == 10 and info.array_module == "jax"
    be = _backend()
    assert be.gradients_module == "sketchcore_jax.gradients"
    assert be.namespace() is jnp
    assert sk.resolve_backend(None, jnp.zeros(3)) is be
    assert not be.owns(np.zeros(3))


def _check_case(case, dtype, rtol):
    algo, opts, n, d, batch, seed = case
    op = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=seed, **opts)
    rng = np.random.default_rng(seed % 2**32)
    x = rng.standard_normal((*batch, n)).astype(dtype)
    y = rng.standard_normal((*batch, d)).astype(dtype)
    got = op.apply(jnp.asarray(x))
    got_t = op.transpose(jnp.asarray(y))
    assert isinstance(got, jax.Array) and got.dtype == dtype
    assert_matches_reference(op, x, y, got, got_t, rtol)
    return x, y, got, got_t


@settings(max_examples=10)
@given(sketch_cases())
def test_matches_numpy_reference_float32(case):
    _check_case(case, np.float32, 1e-5)


@settings(max_examples=8)
@given(sketch_cases())
def test_matches_numpy_reference_float64_under_x64(case):
    with jax.enable_x64(True):
        x, y, got, got_t = _check_case(case, np.float64, 1e-12)
        lhs = float(jnp.sum(got * y))
        rhs = float(jnp.sum(x * got_t))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)) * max(1, x.size // x.shape[-1])


@settings(max_examples=10)
@given(st.lists(st.sampled_from([1, 2, 4, 16, 64, 4096]), min_size=1, max_size=3).filter(
           lambda s: int(np.prod(s)) <= 1 << 13),
       st.integers(0, 2**32 - 1), st.booleans())
def test_lookup_free_hadamard_matches_butterfly(sizes, seed, with_diag):
    rng = np.random.default_rng(seed)

    def perms():
        # a permuted factor of 4096 exceeds the dense limit and takes the gather route
        return [rng.permutation(s) if rng.random() < 0.6 else None for s in sizes]

    plan = KronPlan(sizes, row_perm=perms(), col_perm=perms())
    be, ref = _backend(), sk.Backend(jnp)
    x = jnp.asarray(rng.standard_normal((2, plan.n)), dtype=jnp.float32)
    diag = jnp.asarray(rng.standard_normal(plan.n), dtype=jnp.float32) if with_diag else None
    for p in (plan, plan.transpose()):  # jitted: one compile each instead of one per op
        got = jax.jit(lambda v, d, _p=p: be.hadamard(v, _p, diag=d))(x, diag)
        want = jax.jit(lambda v, d, _p=p: ref.hadamard_butterfly(v, _p, diag=d))(x, diag)
        _close(got, want, 1e-5)
    _close(jax.jit(be.fwht)(x), jax.jit(ref.fwht)(x), 1e-5)


@pytest.mark.parametrize(("algo", "opts"), VARIANTS, ids=IDS)
def test_grad_vmap_jit(algo, opts):
    op = sk.Sketch(algo=algo, in_dim=300, out_dim=40, seed=5, **opts)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(300), dtype=jnp.float32)
    y = jnp.asarray(rng.standard_normal(40), dtype=jnp.float32)
    # grad of <Phi x, y> with respect to x is Phi^T y
    _close(jax.grad(lambda v: jnp.vdot(op.apply(v), y))(x), op.transpose(y), 1e-5)
    # implicit mode: grad of a loss of Phi^T w
    _close(jax.grad(lambda w: jnp.vdot(op.transpose(w), x))(y), op.apply(x), 1e-5)
    xs = jnp.asarray(rng.standard_normal((4, 300)), dtype=jnp.float32)
    _close(jax.vmap(op.apply)(xs), op.apply(xs), 1e-5)
    ys = jnp.asarray(rng.standard_normal((40, 3)), dtype=jnp.float32)
    _close(jax.vmap(op.transpose, in_axes=1)(ys), op.transpose(ys.T), 1e-5)
    user = jax.jit(lambda v: 2.0 * op.apply(v) + 1.0)
    for v in (x, xs[:2]):  # two traces: no tracer may leak from one into the next
        _close(user(v), 2.0 * op.apply(v) + 1.0, 1e-5)
    _close(jax.jit(op.transpose)(ys.T), op.transpose(ys.T), 1e-5)


def test_program_cached_per_operator_and_released_with_it():
    from sketchcore_jax.compile import _PROGRAMS, compiled

    be = _backend()
    op = sk.Sketch(algo="affd", in_dim=512, out_dim=32, seed=0)
    op.apply(jnp.ones(512))
    op.apply(jnp.ones((2, 512)))
    assert compiled(be, op.algorithm, "apply") is compiled(be, op.algorithm, "apply")
    assert op.algorithm in _PROGRAMS
    before = len(_PROGRAMS)
    del op
    gc.collect()
    assert len(_PROGRAMS) == before - 1


def test_lookup_free_programs_have_no_gathers():
    x = jnp.ones((2, 5000), dtype=jnp.float32)
    for algo, opts in [("affd", {}), ("afjl", {}), ("qk", {}), ("affd", {"preconditioner": "q"})]:
        op = sk.Sketch(algo=algo, in_dim=5000, out_dim=64, seed=1, **opts)
        for fn, arg in ((op.apply, x), (op.transpose, jnp.ones((2, 64)))):
            text = str(jax.make_jaxpr(fn)(arg))
            assert "gather" not in text, f"{algo} {opts}: a gather in the program"
    fft = sk.Sketch(algo="affd", in_dim=5000, out_dim=64, seed=1, preconditioner="fft")
    assert "gather" in str(jax.make_jaxpr(fft.apply)(x))  # the check can see gathers


def test_bfloat16_gives_the_float32_result():
    op = sk.Sketch(algo="afjl", in_dim=300, out_dim=40, seed=1)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 300)), dtype=jnp.bfloat16)
    y = op.apply(x)
    assert y.dtype == jnp.float32
    _close(y, op.apply(x.astype(jnp.float32)), 1e-6)


def test_backend_name_converts_numpy_input_and_leaves_it_alone():
    op = sk.Sketch(algo="affd", in_dim=256, out_dim=16, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    x0 = x.copy()
    y = op.apply(x, backend="jax")
    assert isinstance(y, jax.Array)
    _close(y, op.apply(x, backend="numpy"), 1e-5)
    np.testing.assert_array_equal(x, x0)
    assert isinstance(sk.sketch(x, algo="qk", out_dim=16, seed=0, backend="jax"), jax.Array)


@pytest.mark.slow
def test_conformance_suite():
    assert check_backend("jax") > 0


def test_is_traced_only_inside_a_transform():
    """The jax backend calls jit/grad/vmap tracers traced, concrete arrays not; ParamCache keeps
    nothing built inside a trace."""
    from sketchcore.param_cache import ParamCache

    be = _backend()
    seen = []

    def probe(v):
        seen.append(be.is_traced(v))
        return jnp.sum(v)

    x = jnp.ones(3)
    assert be.is_traced(x) is False
    jax.jit(probe)(x)
    jax.grad(probe)(x)
    jax.vmap(probe)(jnp.ones((2, 3)))
    assert seen == [True, True, True]
    cache = ParamCache()
    cache.add("B", np.arange(3.0, dtype=np.float32))
    jax.jit(lambda v: v * cache.get(jnp, v, "B"))(x)
    assert not cache._cache, "a tracer was cached"
    cache.get(jnp, x, "B")
    assert cache._cache
