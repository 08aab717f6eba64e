"""The factored layout on Flax linen models: Dense kernels and Embed tables sketched from the
calls' inputs (``sow``) and output gradients (``perturb``) in one jitted pass.

Exactness: every block equals the block map of the materialized per-example gradient (a Flax
MLP on digits with a Dense called twice and a LayerNorm, which takes the materialized path); an
Embed table also read by ``attend`` (outside its call) is found by the first batch's check and
materialized with a warning; examples never mix; non-Flax jax models are refused clearly.
"""

from __future__ import annotations

import models
import numpy as np
import pytest

jax = pytest.importorskip("jax")
nn = pytest.importorskip("flax.linen")
pytest.importorskip("sklearn")

import jax.numpy as jnp  # noqa: E402

from sketchcore import InvalidOptionError  # noqa: E402
from sketchcore.gradients import GradientSketcher, MaterializedGradientWarning  # noqa: E402

models.ensure_gradients_backend("jax")


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(b).max(), 1e-30))


def assert_blocks_exact(gs, batch, loss, tol=2e-5):
    full = GradientSketcher((gs.adapter.apply_fn, gs.adapter.params), loss,
                            sketch=None).full_gradients(batch)
    per_block = gs.adapter.factored_block_sketches(batch, gs.plan)
    for block in gs.plan.blocks:
        ref = np.asarray(gs.plan.apply(block, np.ascontiguousarray(
            full[:, gs.plan._columns(block)])))
        assert rel_err(per_block[block.name], ref) < tol, block.name
    total = gs.sketch_batch(batch)
    assert rel_err(total, gs.plan.apply_sketch(full)) < tol
    return total


class MLP(nn.Module):
    """Dense -> tanh -> (one Dense called twice) -> LayerNorm -> Dense."""

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(32)(x))
        shared = nn.Dense(32, name="shared")
        x = nn.tanh(shared(jnp.tanh(shared(x))))
        return nn.Dense(10)(nn.LayerNorm()(x))


@pytest.fixture(scope="module")
def mlp():
    m = MLP()
    return m.apply, m.init(jax.random.PRNGKey(0), jnp.ones((1, 64)))


@pytest.fixture(scope="module")
def digits():
    x, y = models.digits_data(20, flat=True)
    return jnp.asarray(x), jnp.asarray(y)


def test_flax_mlp_every_block_is_its_map_of_the_materialized_gradient(mlp, digits):
    gs = GradientSketcher(mlp, models.jax_cross_entropy, layout="factored",
                          sketch=dict(algo="affd", out_dim=64, seed=0))
    assert {b.name for b in gs.plan.kronecker_blocks} == {
        "params.Dense_0.kernel", "params.shared.kernel", "params.Dense_1.kernel"}
    s = assert_blocks_exact(gs, digits, models.jax_cross_entropy)
    engine = gs.adapter._factored_engine(gs.plan)
    assert "params.LayerNorm_0.scale" not in engine._handled    # materialized path
    # examples never mix: a changed example changes only its row; chunks agree
    x, y = digits
    s2 = gs.sketch_batch((x.at[4].set(1.0 - x[4]), y))
    assert np.abs(s2[4] - s[4]).max() > 1e-4
    np.testing.assert_allclose(np.delete(s2, 4, 0), np.delete(s, 4, 0), rtol=0,
                               atol=1e-6 * np.abs(s).max())
    chunked = GradientSketcher(mlp, models.jax_cross_entropy, layout="factored", chunk_size=7,
                               sketch=dict(algo="affd", out_dim=64, seed=0))
    np.testing.assert_allclose(chunked.sketch_batch(digits), s, rtol=1e-4,
                               atol=1e-5 * np.abs(s).max())


class TiedLM(nn.Module):
    """Token embedding whose table is also the output layer (``attend``, outside ``__call__``)."""

    @nn.compact
    def __call__(self, ids):
        embed = nn.Embed(50, 16)
        h = nn.tanh(nn.Dense(16)(embed(ids)))
        return embed.attend(h)


def _token_loss(logits, batch):
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, batch[1][..., None], axis=-1))


def test_embed_read_outside_its_call_is_materialized_with_a_warning():
    m = TiedLM()
    ids = jax.random.randint(jax.random.PRNGKey(1), (6, 7), 0, 50)
    batch = (ids, jnp.roll(ids, -1, axis=1))
    variables = m.init(jax.random.PRNGKey(0), ids[:1])
    gs = GradientSketcher((m.apply, variables), _token_loss, layout="factored",
                          sketch=dict(algo="dense", out_dim=64, seed=0))
    assert "params.Embed_0.embedding" in {b.name for b in gs.plan.kronecker_blocks}
    with pytest.warns(MaterializedGradientWarning, match="Embed_0.embedding is read outside"):
        gs.sketch_batch(batch)
    assert_blocks_exact(gs, batch, _token_loss)


def test_factored_needs_a_flax_model():
    with pytest.raises(InvalidOptionError, match="Flax linen model"):
        GradientSketcher(models.jax_mlp(), models.jax_cross_entropy, layout="factored",
                         sketch=dict(algo="affd", out_dim=64, seed=0))
