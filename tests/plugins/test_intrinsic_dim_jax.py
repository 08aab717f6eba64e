"""Intrinsic-dimension analysis on jax: the implicit = explicit gradient identity through the
jitted ``theta0 + s Phi^T omega``, nested subspaces under optax optimizers, and a search on an
Equinox MLP that agrees with the torch machinery's conventions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
pytest.importorskip("equinox")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/models.py

import jax.numpy as jnp  # noqa: E402
import models  # noqa: E402

from sketchcore_intrinsic_dim import api  # noqa: E402
from sketchcore_intrinsic_dim.subspace_jax import JaxSubspaceTrainer  # noqa: E402

ALGOS = [("afjl", {"preconditioner": "fft"}), ("ffd", {}), ("qk", {})]


def _digits(n=64):
    x, y = models.digits_data(n, flat=True)
    return jnp.asarray(x), jnp.asarray(y)


@pytest.mark.parametrize("algo,opts", ALGOS, ids=[a for a, _ in ALGOS])
def test_omega_gradient_is_sketched_full_gradient(algo, opts):
    x, y = _digits(32)
    model = models.jax_mlp((64, 16, 10), seed=0)
    tr = JaxSubspaceTrainer(model, models.jax_cross_entropy, (x, y), lambda p: 0.0, d_max=64,
                            sketch={"algo": algo, **opts}, seed=2)
    tr.set_dim(64)
    batch = (x, y)
    implicit_grad = jax.jit(jax.grad(tr.loss_of))
    full_grad = jax.jit(jax.grad(tr.flat.loss))
    for omega in (jnp.zeros(64), jax.random.normal(jax.random.PRNGKey(0), (64,))):
        implicit = implicit_grad(omega, batch)
        full = full_grad(tr.theta_of(omega), batch)
        explicit = tr.scale * tr.op.apply(np.asarray(full))  # numpy reference path
        np.testing.assert_allclose(np.asarray(implicit), np.asarray(explicit), rtol=2e-4,
                                   atol=1e-6)


@pytest.mark.parametrize("tx", [None, optax.sgd(0.05, momentum=0.9)], ids=["adam", "sgd"])
def test_masked_coordinates_never_move(tx):
    x, y = _digits(64)
    model = models.jax_mlp((64, 16, 10), seed=0)
    tr = JaxSubspaceTrainer(model, models.jax_cross_entropy, (x, y), lambda p: 0.0, d_max=32,
                            sketch="qk", seed=0, optimizer=tx, lr=0.05, batch_size=16)
    for d in (4, 8, 16):
        tr.set_dim(d)
        for _ in range(5):
            tr.step()
        om = np.asarray(tr.omega)
        assert np.all(om[d:] == 0) and np.count_nonzero(om[:d]) == d
        # one optimizer state per free block, none for the masked coordinates
        assert len(tr.states) == len(tr.blocks) and sum(b.shape[0] for b in tr.blocks) == d
        for st in tr.states:
            for leaf in jax.tree_util.tree_leaves(st):
                assert getattr(leaf, "ndim", 0) == 0 or leaf.shape[0] <= d
    before = np.asarray(tr.omega)[:16].copy()
    tr.set_dim(32)
    np.testing.assert_array_equal(np.asarray(tr.omega)[:16], before)


def test_search_on_mlp_reaches_target_with_baseline():
    x, y = models.digits_data(600, flat=True)
    xe, ye = jnp.asarray(x[400:]), jnp.asarray(y[400:])
    model = models.jax_mlp((64, 32, 10), seed=0)
    apply_fn = model[0]

    def accuracy(params):
        return float(jnp.mean(jnp.argmax(apply_fn(params, xe), -1) == ye))

    rep = api.intrinsic_dimension(model, models.jax_cross_entropy, (x[:400], y[:400]), accuracy,
                                  d_max=512, d_start=16, seeds=[0], target_fraction=0.85,
                                  check_every=25, max_steps=800, baseline_steps=250,
                                  baseline_lr=1e-2, lr=0.05, progress=False)
    assert rep.config["framework"] == "jax"
    assert rep.baseline.metric > 0.8
    for rec in rep.seeds:
        assert rec.dimension is not None, rec.error
        assert 16 <= rec.dimension <= 512
        assert rec.search.checks[-1].metric >= rep.target
        if rec.verification is not None:
            assert rec.verification.reached == (rec.verification.best_metric >= rep.target)
