"""The simulated ideal Gaussian sketch has the law of a real dense Gaussian sketch.

For ``Phi = G / sqrt(D)``: E[Phi x . Phi y] = x . y and Var = (|x|^2 |y|^2 + (x . y)^2) / D.
Both are checked on draws of ``IdealGaussianSketch.gram`` (Bartlett path, D >= rank, and the
direct path, D < rank) against those formulas, with tolerances of 5 standard errors derived from
the estimator's own spread, and against sketchcore's stored ``dense`` sketch of the same vectors.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sketchcore as sk
from sketchcore.ideal_gaussian import IdealGaussianSketch

Z = 5.0


def _vectors(n=6, dim=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    x[1] = 0.8 * x[0] + 0.2 * x[1]  # one strongly correlated pair
    x[2, :5] *= 30.0                 # one vector with a few large coordinates
    return x


@pytest.mark.parametrize("out_dim", [3, 64])  # 3 < rank 6: direct draws; 64: Bartlett
def test_gram_is_unbiased_with_the_gaussian_variance(out_dim):
    x = _vectors()
    k = x @ x.T
    ideal = IdealGaussianSketch(k)
    assert ideal.rank == 6
    rng = np.random.default_rng(1)
    draws = np.stack([ideal.gram(out_dim, rng) for _ in range(4000)])
    var = (np.outer(np.diag(k), np.diag(k)) + k**2) / out_dim
    se_mean = np.sqrt(var / len(draws))
    assert np.all(np.abs(draws.mean(0) - k) <= Z * se_mean)
    # variance of the sample variance: (m4 - var^2) / M, m4 measured from the draws themselves
    dev = draws - k
    m4 = (dev**4).mean(0)
    se_var = np.sqrt(np.maximum(m4 - var**2, 0) / len(draws))
    assert np.all(np.abs((dev**2).mean(0) - var) <= Z * se_var + 1e-12)


def test_matches_a_stored_dense_gaussian_sketch():
    """Same mean and spread of one inner product as sketchcore's explicit dense sketch."""
    x = _vectors(n=3, dim=64).astype(np.float32)
    k = x.astype(np.float64) @ x.T.astype(np.float64)
    d, m = 16, 600
    real = []
    for s in range(m):
        y = np.asarray(sk.Sketch(algo="dense", in_dim=64, out_dim=d, seed=s).apply(x),
                       dtype=np.float64)
        real.append(y[0] @ y[1])
    ideal = IdealGaussianSketch(k)
    rng = np.random.default_rng(2)
    sim = [ideal.gram(d, rng)[0, 1] for _ in range(m)]
    real, sim = np.array(real), np.array(sim)
    se = np.sqrt(real.var(ddof=1) / m + sim.var(ddof=1) / m)
    assert abs(real.mean() - sim.mean()) <= Z * se
    # the two spreads agree: the log of a sample sd has standard error sqrt((kurtosis - 1) / 4m)
    def se_log_sd(v):
        c = v - v.mean()
        return np.sqrt(((c**4).mean() / (c**2).mean() ** 2 - 1.0) / (4 * m))

    se_log = np.hypot(se_log_sd(real), se_log_sd(sim))
    assert abs(np.log(real.std(ddof=1) / sim.std(ddof=1))) <= Z * se_log


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 7), dim=st.integers(1, 12), out_dim=st.integers(1, 40),
       seed=st.integers(0, 2**31 - 1))
def test_draws_are_symmetric_psd_of_bounded_rank(n, dim, out_dim, seed):
    x = np.random.default_rng(seed).standard_normal((n, dim))
    ideal = IdealGaussianSketch(x @ x.T)
    g = ideal.gram(out_dim, seed)
    assert g.shape == (n, n)
    np.testing.assert_allclose(g, g.T, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(g).max()))
    w = np.linalg.eigvalsh(g)
    assert w.min() >= -1e-8 * max(1.0, w.max())
    assert np.sum(w > 1e-8 * max(1.0, w.max())) <= min(out_dim, ideal.rank)
    np.testing.assert_array_equal(g, ideal.gram(out_dim, seed))  # seeded: reproducible


def test_zero_vectors_and_bad_input():
    assert np.all(IdealGaussianSketch(np.zeros((3, 3))).gram(8) == 0)
    with pytest.raises(ValueError, match="square"):
        IdealGaussianSketch(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        IdealGaussianSketch(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="out_dim must be a positive integer"):
        IdealGaussianSketch(np.eye(2)).gram(0)
