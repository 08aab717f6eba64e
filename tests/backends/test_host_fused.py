"""torch CPU tensors and concrete jax CPU arrays of affd/afjl take the numba backend's fused
passes as one call per batch (``Backend.scratch_is_bounded``), with the numpy path's exact
result; tracked tensors, tracers and other operators keep their own differentiable kernels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba", reason="the host kernels are the numba backend's (pip install numba)")

import sketchcore as sk  # noqa: E402
from sketchcore.registry import registry  # noqa: E402

IN_DIM = 3000


def _op(algo, **opts):
    return sk.Sketch(algo=algo, in_dim=IN_DIM, out_dim=128, seed=5, **opts)


def _batch(dtype, rows):
    return np.random.default_rng(1).standard_normal((rows, IN_DIM)).astype(dtype)


def _large_batch(op, dtype):
    """More rows than one chunk of ``Sketch``'s row loop, so a single call is observable."""
    return _batch(dtype, 2 * (op.algorithm.rows_per_call() or 1) + 1)


def _count_calls(monkeypatch, backend):
    calls = []
    original = type(backend).apply_op

    def counting(self, op, direction, x):
        calls.append(tuple(x.shape))
        return original(self, op, direction, x)

    monkeypatch.setattr(type(backend), "apply_op", counting)
    return calls


@pytest.mark.parametrize("algo", ["affd", "afjl"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_cpu_tensor_equals_numpy_in_one_call(monkeypatch, algo, dtype):
    torch = pytest.importorskip("torch")
    op = _op(algo)
    x = _large_batch(op, dtype)
    want = np.asarray(op.apply(x))
    be = registry().backend("torch")
    calls = _count_calls(monkeypatch, be)
    got = op.apply(torch.from_numpy(x))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.from_numpy(x).dtype
    np.testing.assert_array_equal(got.numpy(), want)
    assert calls == [x.shape], calls


@pytest.mark.parametrize("algo", ["affd", "afjl"])
def test_torch_tracked_tensor_keeps_autograd(algo):
    torch = pytest.importorskip("torch")
    op = _op(algo)
    x = torch.from_numpy(_batch(np.float64, 3)).requires_grad_()
    be = registry().backend("torch")
    assert not be.scratch_is_bounded(op.algorithm, "apply", x)
    y = op.apply(x)
    assert y.requires_grad
    w = torch.randn(y.shape, dtype=y.dtype)
    (y * w).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.asarray(op.transpose(w.numpy())), rtol=1e-10,
                               atol=1e-12)
    with torch.no_grad():
        assert be.scratch_is_bounded(op.algorithm, "apply", x)


def test_torch_other_operators_and_directions_are_not_fused():
    torch = pytest.importorskip("torch")
    be = registry().backend("torch")
    x = torch.from_numpy(_batch(np.float32, 2))
    assert not be.scratch_is_bounded(_op("affd").algorithm, "transpose", x[:, :128])
    assert not be.scratch_is_bounded(_op("affd", preconditioner="fft").algorithm, "apply", x)
    assert not be.scratch_is_bounded(_op("fjl").algorithm, "apply", x)


@pytest.mark.parametrize("algo", ["affd", "afjl"])
def test_jax_concrete_cpu_array_equals_numpy_in_one_call(monkeypatch, algo):
    jax = pytest.importorskip("jax")
    op = _op(algo)
    x = _large_batch(op, np.float32)
    want = np.asarray(op.apply(x))
    be = registry().backend("jax")
    calls = _count_calls(monkeypatch, be)
    got = op.apply(jax.numpy.asarray(x))
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert calls == [x.shape], calls


def test_jax_tracer_is_not_fused():
    jax = pytest.importorskip("jax")
    op = _op("affd")
    be = registry().backend("jax")
    seen = []

    def f(v):
        seen.append(be.scratch_is_bounded(op.algorithm, "apply", v))
        return op.apply(v)

    x = _batch(np.float32, 2)
    y = jax.jit(f)(jax.numpy.asarray(x))
    assert seen == [False]
    np.testing.assert_allclose(np.asarray(y), np.asarray(op.apply(x)), rtol=1e-4, atol=1e-4)
