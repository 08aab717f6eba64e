"""The torch backend: equal to the numpy reference, differentiable under autograd and torch.func,
device- and dtype-preserving, and registered without importing torch. Every test runs twice: with
CPU tensors handed to the compiled host kernels (numba, when installed) and on torch's own ops."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import sketchcore as sk  # noqa: E402
from core.helpers import assert_normwise_close  # noqa: E402
from backend_cases import (IDS, VARIANTS, assert_import_is_light,  # noqa: E402
                           assert_matches_reference, sketch_cases)
from sketchcore.kron_plans import KronPlan  # noqa: E402
from sketchcore.testing import check_backend  # noqa: E402

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


HOST_ENV = "SKETCHCORE_TORCH_HOST_KERNELS"


@pytest.fixture(autouse=True, scope="module", params=["host-kernels", "torch-ops"])
def kernel_path(request):
    """Module-scoped (hypothesis refuses function-scoped fixtures): set the switch of
    ``sketchcore_torch.host`` for every test of one pass, restore it afterwards."""
    old = os.environ.get(HOST_ENV)
    os.environ[HOST_ENV] = "1" if request.param == "host-kernels" else "0"
    yield request.param
    if old is None:
        os.environ.pop(HOST_ENV, None)
    else:
        os.environ[HOST_ENV] = old


def _backend():
    return sk.resolve_backend("torch", None)


_close = assert_normwise_close


def test_import_does_not_load_torch():
    assert_import_is_light("sketchcore_torch", "torch")


def test_registered_and_picked_for_tensors():
    info = {b.name: b for b in sk.backends()}["torch"]
    assert info.usable, info.reason
    assert info.priority == 10 and info.array_module == "torch"
    be = _backend()
    assert be.gradients_module == "sketchcore_torch.gradients"
    assert sk.resolve_backend(None, torch.zeros(3)) is be
    assert not be.owns(np.zeros(3))


@given(sketch_cases(dtypes=[np.float32, np.float64]))
def test_matches_numpy_reference(case):
    algo, opts, n, d, batch, seed, dtype = case
    op = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=seed, **opts)
    rng = np.random.default_rng(seed % 2**32)
    x = rng.standard_normal((*batch, n)).astype(dtype)
    y = rng.standard_normal((*batch, d)).astype(dtype)
    got = op.apply(torch.from_numpy(x))
    got_t = op.transpose(torch.from_numpy(y))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.from_numpy(x).dtype
    assert_matches_reference(op, x, y, got.numpy(), got_t.numpy(), RTOL[dtype])
    if dtype == np.float64:  # adjoint identity <Phi x, y> = <x, Phi^T y>
        lhs = float(torch.sum(got * torch.from_numpy(y)))
        rhs = float(torch.sum(torch.from_numpy(x) * got_t))
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)) * np.prod(batch or (1,))


@st.composite
def plans(draw):
    # at most 2^14 entries: four factors of 128 would be a 2^28-long (16 GiB) batch
    sizes = tuple(draw(st.lists(st.sampled_from([1, 2, 4, 8, 16, 32, 128]), min_size=1,
                                max_size=4).filter(lambda v: math.prod(v) <= 2**14)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def perms():
        return [rng.permutation(s) if draw(st.booleans()) else None for s in sizes]

    return KronPlan(sizes, row_perm=perms(), col_perm=perms()), rng


@given(plans(), st.booleans(), st.sampled_from([(), (3,), (2, 3)]))
def test_hadamard_and_fwht_kernels_match_reference(plan_rng, with_diag, batch):
    import array_api_compat.torch as xp

    plan, rng = plan_rng
    be, ref = _backend(), sk.Backend(xp)
    x = torch.from_numpy(rng.standard_normal((*batch, plan.n)))
    diag = torch.from_numpy(rng.standard_normal(plan.n)) if with_diag else None
    for p in (plan, plan.transpose()):
        _close(be.hadamard(x, p, diag=diag), ref.hadamard(x, p, diag=diag), 1e-12)
    _close(be.fwht(x), ref.fwht(x), 1e-12)
    _close(be.fwht(be.fwht(x)), plan.n * x, 1e-12)


def test_fwht_equals_dense_hadamard():
    from scipy.linalg import hadamard

    be = _backend()
    for n in (1, 2, 8, 64, 512, 2048):
        x = torch.randn(3, n, dtype=torch.float64)
        _close(be.fwht(x), x @ torch.from_numpy(hadamard(n).astype(np.float64)), 1e-12)


def _small(algo, opts):
    extra = {"max_block": 4} if "preconditioner" in opts else {}
    return sk.Sketch(algo=algo, in_dim=24, out_dim=8, seed=7, **opts, **extra)


@pytest.mark.parametrize(("algo", "opts"), VARIANTS, ids=IDS)
def test_gradcheck_float64(algo, opts):
    op = _small(algo, opts)
    x = torch.randn(2, 24, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.apply, (x,))
    assert torch.autograd.gradcheck(op.transpose, (y,))
    if opts.get("preconditioner") != "fft":  # rfft's double backward is slow; linear anyway
        assert torch.autograd.gradgradcheck(op.transpose, (y,))


@pytest.mark.parametrize(("algo", "opts"), VARIANTS, ids=IDS)
def test_torch_func_vmap_grad_jvp(algo, opts):
    from torch.func import grad, jvp, vmap

    op = _small(algo, opts)
    xs = torch.randn(5, 24)
    _close(vmap(op.apply)(xs), op.apply(xs), 1e-6)
    ys = torch.randn(8, 4)
    _close(vmap(op.transpose, in_dims=1)(ys), op.transpose(ys.T), 1e-6)

    # implicit use: grad of a loss of theta0 + Phi^T w with respect to w
    target = torch.randn(24)

    def loss(w):
        return 0.5 * torch.sum((op.transpose(w) - target) ** 2)

    w = torch.randn(8)
    _close(grad(loss)(w), op.apply(op.transpose(w) - target), 1e-5)
    # sketched HVP by forward-over-reverse: H = Phi Phi^T for this quadratic
    v = torch.randn(8)
    _, hvp = jvp(grad(loss), (w,), (v,))
    _close(hvp, op.apply(op.transpose(v)), 1e-5)
    _close(vmap(grad(loss))(torch.stack([w, v])), torch.stack([grad(loss)(w), grad(loss)(v)]),
           1e-6)


def test_bfloat16_and_float16_give_the_float32_result():
    op = sk.Sketch(algo="affd", in_dim=300, out_dim=40, seed=1)
    x = torch.randn(2, 300).to(torch.bfloat16)
    for low in (x, x.to(torch.float16)):
        y = op.apply(low)
        assert y.dtype == torch.float32
        _close(y, op.apply(low.to(torch.float32)), 1e-6)


@pytest.mark.parametrize(("algo", "opts"), VARIANTS, ids=IDS)
def test_inputs_not_modified_and_no_grad_modes(algo, opts):
    op = sk.Sketch(algo=algo, in_dim=100, out_dim=16, seed=2, **opts)
    x = torch.randn(3, 100)
    y = torch.randn(3, 16)
    x0, y0 = x.clone(), y.clone()
    with torch.inference_mode():
        a = op.apply(x)
        b = op.transpose(y)
    with torch.no_grad():
        _close(op.apply(x), a, 1e-6)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert a.grad_fn is None and b.grad_fn is None


def test_backend_name_converts_numpy_input():
    op = sk.Sketch(algo="qk", in_dim=256, out_dim=16, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    y = op.apply(x, backend="torch")
    assert isinstance(y, torch.Tensor)
    _close(y.numpy(), op.apply(x, backend="numpy"), 1e-5)
    y2 = sk.sketch(x, algo="affd", out_dim=16, seed=0, backend="torch")
    assert isinstance(y2, torch.Tensor)


def test_sparse_path_equals_gathers():
    """FJL's transposed matrix is mostly padding: the CSR product runs and equals the gathers."""
    import array_api_compat.torch as xp

    from sketchcore.kernels import ell_matvec
    from sketchcore_torch.sparse import _csr

    op = sk.Sketch(algo="fjl", in_dim=4096, out_dim=64, seed=3)
    y = torch.randn(5, 64)
    got = op.transpose(y)
    algorithm = op.algorithm
    idx = algorithm.params.get(xp, y, "idx_t", index=True)
    vals = algorithm.params.get(xp, y, "vals_t")
    assert _csr(idx, vals, 64) is not None
    z = ell_matvec(xp, y, idx, vals)
    _close(_backend().ell_matvec(y, idx, vals), z, 1e-6)
    _close(got.numpy(), op.transpose(y.numpy(), backend="numpy"), 1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize(("algo", "opts"), VARIANTS, ids=IDS)
def test_cuda_keeps_device(algo, opts):
    op = sk.Sketch(algo=algo, in_dim=1000, out_dim=64, seed=0, **opts)
    x = torch.randn(3, 1000)
    y = op.apply(x.cuda())
    assert y.is_cuda
    _close(y.cpu(), op.apply(x), 1e-5)
    assert op.transpose(y).is_cuda


def test_conformance_suite():
    assert check_backend("torch") > 0


def test_cpu_tensors_reach_the_host_kernels_only_when_they_can(kernel_path, monkeypatch):
    """Plain CPU float tensors go to the numpy backend's compiled kernels (zero-copy views) when
    it has them and the switch is on; the results equal torch's own ops either way."""
    from sketchcore.registry import registry
    from sketchcore_torch import host

    numpy_backend = registry().backend_for(np.zeros(1, np.float32))
    compiled = getattr(numpy_backend, "compiled_host_kernels", False)
    expect_host = kernel_path == "host-kernels" and compiled
    assert (host.host_backend() is numpy_backend) == expect_host
    calls = []
    for name in ("hadamard", "fwht", "ell_matvec"):
        orig = getattr(type(numpy_backend), name)

        def spy(self, *args, _orig=orig, _name=name, **kwargs):
            calls.append(_name)
            return _orig(self, *args, **kwargs)

        monkeypatch.setattr(type(numpy_backend), name, spy)
    x = torch.randn(3, 1000, dtype=torch.float64)
    for algo, opts in VARIANTS:
        op = sk.Sketch(algo=algo, in_dim=1000, out_dim=64, seed=5, **opts)
        y = op.apply(x)
        assert isinstance(y, torch.Tensor) and y.dtype == torch.float64
        _close(y.numpy(), op.apply(x.numpy(), backend="numpy"), 1e-12)
    assert bool(calls) == expect_host, calls
    if expect_host:
        assert {"hadamard", "ell_matvec"} <= set(calls)
    # a bfloat16 view, a wrapped tensor and an empty batch are never handed over
    assert host.host_view(torch.zeros(4, dtype=torch.bfloat16)) is None
    assert host.host_view(torch.zeros(0, 4)) is None
    seen = []
    torch.func.vmap(lambda t: seen.append(host.host_view(t)) or t)(torch.zeros(2, 4))
    assert seen == [None]


def test_is_traced_only_inside_torch_func():
    """The torch backend calls tensors inside torch.func transforms traced, plain tensors not;
    ParamCache keeps nothing built inside a transform."""
    from sketchcore.param_cache import ParamCache

    be = sk.resolve_backend("torch", torch.ones(1))
    seen = []

    def probe(v):
        seen.append(be.is_traced(v))
        return v.sum()

    x = torch.ones(3)
    assert be.is_traced(x) is False
    torch.func.grad(probe)(x)
    torch.func.vmap(probe)(torch.ones(2, 3))
    assert seen == [True, True]
    cache = ParamCache()
    cache.add("B", np.arange(3.0, dtype=np.float32))
    torch.func.grad(lambda v: (v * cache.get(torch, v, "B")).sum())(x)
    assert not cache._cache, "a tensor of a torch.func transform was cached"
    cache.get(torch, x, "B")
    assert cache._cache
