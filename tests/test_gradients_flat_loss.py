"""The adapters' loss of a flat parameter vector (``unflatten``, ``flat_loss``), torch and jax:
at the current parameters it is the batch loss, its gradient is the batch gradient of the
selected parameters, it moves with ``theta`` and leaves the model itself untouched."""

from __future__ import annotations

import models
import numpy as np
import pytest

from sketchcore.gradients import find_adapter


def test_torch_flat_loss_is_the_loss_at_theta():
    torch = pytest.importorskip("torch")
    models.ensure_gradients_backend("torch")
    model = models.digits_cnn(seed=0)
    x, y = models.digits_data(16)
    batch = (x, y)
    ad = find_adapter(model, models.cross_entropy, params=["3.*"])  # the linear layer only
    theta0 = torch.from_numpy(ad.get_flat())
    assert theta0.shape == (sum(ad.sizes),) and ad.names == ["3.weight", "3.bias"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    theta = theta0.clone().requires_grad_(True)
    loss = ad.flat_loss(theta, batch)
    assert float(loss.detach()) == pytest.approx(ad.batch_loss(batch), rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(theta.grad.numpy(), ad.batch_gradient(batch), rtol=1e-5,
                               atol=1e-7)
    # the other parameters are constants: no gradient reaches the module
    assert all(p.grad is None for p in model.parameters())

    moved = theta0 + 0.1 * torch.randn(theta0.shape, generator=torch.Generator().manual_seed(0))
    ad.set_flat(moved.numpy())
    expected = ad.batch_loss(batch)
    ad.set_flat(theta0.numpy())
    assert float(ad.flat_loss(moved, batch)) == pytest.approx(expected, rel=1e-6)
    assert float(ad.flat_loss(moved, batch)) != pytest.approx(float(loss.detach()),
                                                             rel=1e-3)
    # the module was never modified by flat_loss
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    parts = ad.unflatten(moved)
    assert set(parts) == {n for n, _ in model.named_parameters()}
    assert torch.equal(parts["3.bias"], moved[-ad.sizes[-1]:])


def test_jax_flat_loss_is_the_loss_at_theta():
    jax = pytest.importorskip("jax")
    pytest.importorskip("equinox")
    models.ensure_gradients_backend("jax")
    import jax.numpy as jnp

    apply_fn, params = models.jax_mlp((64, 16, 10), seed=0)
    x, y = models.digits_data(16, flat=True)
    batch = (jnp.asarray(x), jnp.asarray(y))
    ad = find_adapter((apply_fn, params), models.jax_cross_entropy)
    theta0 = jnp.asarray(ad.get_flat())
    loss, grad = jax.value_and_grad(ad.flat_loss)(theta0, batch)
    assert float(loss) == pytest.approx(ad.batch_loss(batch), rel=1e-6)
    np.testing.assert_allclose(np.asarray(grad), ad.batch_gradient(batch), rtol=1e-5, atol=1e-7)

    moved = theta0 + 0.1 * jax.random.normal(jax.random.PRNGKey(0), theta0.shape)
    tree = ad.unflatten(moved)
    assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(params)
    direct = models.jax_cross_entropy(apply_fn(tree, batch[0]), batch)
    jitted = jax.jit(ad.flat_loss)(moved, batch)
    assert float(jitted) == pytest.approx(float(direct), rel=1e-5)
    assert float(jitted) != pytest.approx(float(loss), rel=1e-3)
