"""Sketched per-example gradients and HVPs of jax models (sketchcore.gradients + the jax adapter):
Equinox MLPs on scikit-learn's digits as ``(apply_fn, params)``. Exactness against per-example
``jax.grad``, explicit == implicit, HVPs against the dense ``Phi H Phi^T``, Pearson r of sketched
inner products, the loop fallback, bf16, streaming and parameters."""

from __future__ import annotations

import models
import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("equinox")
pytest.importorskip("sklearn")

import jax.numpy as jnp  # noqa: E402

import sketchcore as sk  # noqa: E402
from sketchcore.gradients import GradientSketcher, PerExampleLoopWarning  # noqa: E402

models.ensure_gradients_backend("jax")


def pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def digits():
    x, y = models.digits_data(48, flat=True)
    return x, y


@pytest.fixture(scope="module")
def small_mlp():
    """64 -> 16 -> 10: 1,210 parameters (dense Hessian size)."""
    return models.jax_mlp((64, 16, 10), seed=0)


def manual_per_example(model, x, y):
    apply_fn, params = model
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def loss(leaves, xi, yi):
        p = jax.tree_util.tree_unflatten(treedef, leaves)
        return models.jax_cross_entropy(apply_fn(p, xi), (xi, yi))

    g = jax.grad(loss)
    rows = [np.concatenate([np.ravel(a) for a in g(leaves, x[i:i + 1], y[i:i + 1])])
            for i in range(len(x))]
    return np.stack(rows)


def sketcher(model, **kw):
    """A GradientSketcher; without ``sketch=`` the identity (exact gradients, D = N)."""
    kw.setdefault("sketch", None)
    return GradientSketcher(model, models.jax_cross_entropy, **kw)


def test_adapter_and_names_come_from_the_pytree(small_mlp):
    from sketchcore_jax.gradients import JaxGradients

    gs = sketcher(small_mlp, sketch=dict(algo="qk", out_dim=64, seed=0))
    assert isinstance(gs.adapter, JaxGradients)
    assert gs.param_names == ["layers.0.weight", "layers.0.bias", "layers.1.weight",
                              "layers.1.bias"]
    assert gs.param_shapes == [(16, 64), (16,), (10, 16), (10,)]
    assert gs.num_params == 1210
    sel = sketcher(small_mlp, params=["layers.1.*"])
    assert sel.param_names == ["layers.1.weight", "layers.1.bias"] and sel.num_params == 170
    with pytest.raises(sk.InvalidOptionError, match="selects no floating-point array"):
        sketcher(small_mlp, params=["decoder.*"])


def test_full_gradients_match_per_example_grad(small_mlp, digits):
    x, y = digits
    got = sketcher(small_mlp).full_gradients((x[:12], y[:12]))
    ref = manual_per_example(small_mlp, x[:12], y[:12])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    lg = sketcher(small_mlp).layer_gradients((x[:12], y[:12]), "layers.1.")
    np.testing.assert_allclose(lg, ref[:, 1040:], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("algo, layout", [
    ("affd", "flat"), ("qk", "blocks"),
    pytest.param("affd", "blocks", marks=pytest.mark.slow),
    pytest.param("qk", "flat", marks=pytest.mark.slow),
])
def test_sketch_is_phi_of_the_gradient_and_modes_agree(small_mlp, digits, algo, layout):
    x, y = digits
    batch = (x[:10], y[:10])
    spec = dict(algo=algo, out_dim=128, seed=2)
    explicit = sketcher(small_mlp, sketch=spec, layout=layout)
    implicit = sketcher(small_mlp, sketch=spec, layout=layout, mode="implicit")
    s_e, s_i = explicit.sketch_batch(batch), implicit.sketch_batch(batch)
    ref = explicit.apply_sketch(explicit.full_gradients(batch))
    assert s_e.dtype == np.float32 and s_e.shape == (10, 128)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(s_e, ref, atol=2e-5 * scale)
    np.testing.assert_allclose(s_i, s_e, atol=2e-5 * scale)


def test_mean_gradient_loss_and_sketch(small_mlp, digits):
    x, y = digits
    batches = [(x[:10], y[:10]), (x[10:16], y[10:16])]
    gs = sketcher(small_mlp, sketch=dict(algo="qk", out_dim=64, seed=0), layout="blocks")
    full = gs.full_gradients((x[:16], y[:16]))
    np.testing.assert_allclose(gs.mean_gradient(batches), full.mean(0), rtol=1e-4, atol=1e-6)
    apply_fn, params = small_mlp
    ref = float(models.jax_cross_entropy(apply_fn(params, x[:16]), (x[:16], y[:16])))
    assert gs.loss(batches) == pytest.approx(ref, rel=1e-5)
    np.testing.assert_allclose(gs.mean_gradient_sketch(batches), gs.apply_sketch(full.mean(0)),
                               rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def mlp_hessian(small_mlp, digits):
    x, y = digits
    batches = [(x[:16], y[:16]), (x[16:24], y[16:24])]
    return batches, sketcher(small_mlp).hessian(batches)


def test_hessian_is_symmetric_and_matches_full_hvp(small_mlp, mlp_hessian):
    batches, h = mlp_hessian
    assert h.shape == (1210, 1210)
    np.testing.assert_allclose(h, h.T, atol=1e-6)
    op = sketcher(small_mlp).hvp_full_operator(batches)
    v = np.random.default_rng(0).standard_normal(1210)
    np.testing.assert_allclose(op(v), h @ v, atol=5e-5 * np.abs(h @ v).max())


@pytest.mark.parametrize("layout, mode", [
    ("flat", "explicit"), ("blocks", "implicit"),
    pytest.param("flat", "implicit", marks=pytest.mark.slow),
    pytest.param("blocks", "explicit", marks=pytest.mark.slow),
])
def test_sketched_hvp_is_phi_h_phi_t(small_mlp, mlp_hessian, layout, mode):
    batches, h = mlp_hessian
    gs = sketcher(small_mlp, sketch=dict(algo="qk", out_dim=64, seed=4), layout=layout, mode=mode)
    phi_t = gs.transpose_sketch(np.eye(64))
    m = phi_t @ h @ phi_t.T
    op = gs.hvp_operator(batches)
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = rng.standard_normal(64)
        np.testing.assert_allclose(op(v), m @ v, atol=5e-5 * np.abs(m @ v).max())


@pytest.fixture(scope="module")
def wide_mlp():
    """64 -> 128 -> 10 MLP (9,610 parameters) and the exact 16 x 16 gradient inner products of
    32 digits."""
    return models.jax_mlp((64, 128, 10), seed=1)


@pytest.fixture(scope="module")
def wide_exact(wide_mlp, digits):
    x, y = digits
    g = sketcher(wide_mlp).full_gradients((x[:32], y[:32]))
    return g[:16] @ g[16:].T


@pytest.mark.parametrize("layout", ["flat", "blocks"])
def test_pearson_grows_with_d(wide_mlp, wide_exact, digits, layout):
    """Pearson r of sketched vs exact inner products grows with D and exceeds 0.95 at D = 2^12
    (qk); the blocks layout also checks implicit == explicit there."""
    x, y = digits
    batch = (x[:32], y[:32])
    rs = []
    for log_d in (6, 9, 12):
        s = sketcher(wide_mlp, sketch=dict(algo="qk", out_dim=2**log_d, seed=0),
                     layout=layout).sketch_batch(batch)
        rs.append(pearson(s[:16] @ s[16:].T, wide_exact))
    assert rs[0] < rs[1] < rs[2], rs
    assert rs[2] > 0.95, rs
    if layout == "blocks":
        s_i = sketcher(wide_mlp, sketch=dict(algo="qk", out_dim=2**12, seed=0), layout=layout,
                       mode="implicit").sketch_batch(batch)
        np.testing.assert_allclose(s_i, s, atol=1e-4 * np.abs(s).max())


def test_loop_fallback_warns_and_is_exact(digits):
    x, y = digits
    model = models.jax_callback_mlp((64, 16, 10))
    gs = sketcher(model, sketch=dict(algo="qk", out_dim=64, seed=0))
    with pytest.warns(PerExampleLoopWarning, match="jax.vmap cannot run this model"):
        s = gs.sketch_batch((x[:5], y[:5]))
    ref = manual_per_example(models.jax_mlp((64, 16, 10)), np.tanh(x[:5]), y[:5])
    np.testing.assert_allclose(gs.full_gradients((x[:5], y[:5])), ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s, gs.apply_sketch(ref), atol=1e-5 * np.abs(s).max())


def test_bf16_params_give_fp32_sketches(small_mlp, digits):
    x, y = digits
    spec = dict(algo="qk", out_dim=256, seed=0)
    s32 = sketcher(small_mlp, sketch=spec).sketch_batch((x[:8], y[:8]))
    apply_fn, params = small_mlp
    bf16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    gs16 = sketcher((apply_fn, bf16), sketch=spec)
    s16 = gs16.sketch_batch((x[:8], y[:8]))
    assert s16.dtype == np.float32
    assert pearson(s16, s32) > 0.98


def test_stream_params_fingerprint_and_equinox_modules(small_mlp, digits):
    import equinox as eqx

    x, y = digits
    gs = sketcher(small_mlp, sketch=dict(algo="qk", out_dim=64, seed=0))
    ref = gs.sketch_batch((x[:20], y[:20]))
    out = list(gs.stream((x[:20], y[:20]), batch_size=8, progress=False))
    assert [len(i) for i, _ in out] == [8, 8, 4]
    np.testing.assert_allclose(np.concatenate([s for _, s in out]), ref, rtol=1e-4, atol=1e-6)

    theta = gs.get_flat_params()
    fp = gs.fingerprint()
    assert theta.shape == (1210,) and fp == gs.fingerprint()
    gs.set_flat_params(theta * 0.5)
    np.testing.assert_allclose(gs.get_flat_params(), theta * 0.5, rtol=1e-6)
    assert gs.fingerprint()["hash"] != fp["hash"]
    assert not np.allclose(gs.sketch_batch((x[:4], y[:4])), ref[:4])

    module = eqx.nn.MLP(64, 10, width_size=16, depth=1, activation=jnp.tanh,
                        key=jax.random.PRNGKey(0))
    direct = GradientSketcher(module, lambda out, b: models.jax_cross_entropy(out, b),
                              sketch=dict(algo="qk", out_dim=64, seed=0),
                              forward=lambda call, b: jax.vmap(call)(b[0]))
    np.testing.assert_allclose(direct.sketch_batch((x[:20], y[:20])), ref, rtol=1e-4, atol=1e-6)


# ---- float64 references ----------------------------------------------------------------------


def _x64():
    """A context with jax's 64-bit types enabled (``jax.enable_x64`` in new releases,
    ``jax.experimental.enable_x64`` in older ones)."""
    ctx = getattr(jax, "enable_x64", None)
    if callable(ctx):
        return ctx(True)
    from jax.experimental import enable_x64

    return enable_x64()


def _cross_entropy_same_dtype(output, batch):
    """Cross-entropy computed in the logits' own dtype (models.jax_cross_entropy uses float32)."""
    logp = jax.nn.log_softmax(output)
    return -jnp.mean(jnp.take_along_axis(logp, batch[1][:, None].astype(jnp.int32), axis=1))


def test_exact_references_keep_float64_under_x64(digits):
    """``batch_gradient`` and the exact HVP of a float64 model stay float64, as in torch (they
    used to pass through float32, an error of ~1e-7 relative in a reference)."""
    x, y = digits
    with _x64():
        apply_fn, params = models.jax_mlp((64, 16, 10), seed=0, dtype=jnp.float64)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        sizes = [a.size for a in leaves]
        xb, yb = jnp.asarray(x[:12], dtype=jnp.float64), jnp.asarray(y[:12])

        def loss_flat(flat):
            parts = jnp.split(flat, np.cumsum(sizes)[:-1])
            p = jax.tree_util.tree_unflatten(
                treedef, [q.reshape(a.shape) for q, a in zip(parts, leaves)])
            return _cross_entropy_same_dtype(apply_fn(p, xb), (xb, yb))

        flat0 = jnp.concatenate([a.ravel() for a in leaves])
        assert flat0.dtype == jnp.float64
        ref_g = np.asarray(jax.grad(loss_flat)(flat0))
        v = np.random.default_rng(0).standard_normal(flat0.size)
        ref_hv = np.asarray(jax.jvp(jax.grad(loss_flat), (flat0,), (jnp.asarray(v),))[1])

        gs = GradientSketcher((apply_fn, params), _cross_entropy_same_dtype, sketch=None)
        g = gs.adapter.batch_gradient((xb, yb))
        hv = gs.hvp_full_operator([(xb, yb)])(v)
    assert g.dtype == np.float64 and hv.dtype == np.float64
    np.testing.assert_allclose(g, ref_g, rtol=1e-12, atol=1e-14 * np.abs(ref_g).max())
    np.testing.assert_allclose(hv, ref_hv, rtol=1e-10, atol=1e-12 * np.abs(ref_hv).max())
