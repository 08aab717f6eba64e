"""Lanczos/Arnoldi on abstract operators, derived quantities, and the sketched planted spectrum.

Tolerance for the planted test: an isolated outlier ``lambda u u^T`` becomes ``lambda ||Phi u||^2``
in ``Phi H Phi^T``; for a Gaussian-like sketch ``||Phi u||^2`` has relative standard deviation
``sqrt(2 / D)``. We require every planted eigenvalue within ``5 sqrt(2/D)`` and their mean
relative error within ``3 sqrt(2/D)`` (the mean of |N(0, s^2)| is 0.8 s).
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sketchcore as sk
from sketchcore import InvalidOptionError, ShapeError
from sketchcore_spectrum.derived import count_outliers, gradient_alignment, outlier_ratios, rneg
from sketchcore_spectrum.lanczos import extreme_eigenpairs
from sketchcore_spectrum.planted import PlantedHessian
from sketchcore_spectrum.spectrum import operator_spectrum, sketched_operator

N = 4096
OUTLIERS = np.array([50.0, 30.0, 20.0, 12.0, 8.0])
NEGATIVES = np.array([-6.0, -3.0])


def _planted(seed=3):
    rng = np.random.default_rng(0)
    bulk = rng.uniform(-0.01, 0.02, N - OUTLIERS.size - NEGATIVES.size)
    return PlantedHessian(np.r_[OUTLIERS, bulk, NEGATIVES], seed=seed)


def _random_symmetric(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    return (a + a.T) / 2


# ---- Lanczos / Arnoldi on small dense operators ----------------------------------------------

@given(n=st.integers(8, 60), k=st.integers(1, 4), seed=st.integers(0, 2**16),
       method=st.sampled_from(["lanczos", "arnoldi"]))
def test_full_krylov_space_is_exact(n, k, seed, method):
    """With max_iter = n the Krylov space is everything: Ritz values equal eigh's."""
    A = _random_symmetric(n, seed)
    ev = np.linalg.eigvalsh(A)
    r = extreme_eigenpairs(lambda v: A @ v, n, k, method=method, max_iter=n, seed=seed)
    scale = np.abs(ev).max()
    np.testing.assert_allclose(r.top, ev[::-1][:k], atol=1e-9 * scale)
    np.testing.assert_allclose(r.bottom, ev[:k], atol=1e-9 * scale)


@pytest.mark.parametrize("method", ["lanczos", "arnoldi"])
def test_ritz_vectors_and_residuals(method):
    """Returned vectors are unit eigenvector estimates whose true residual matches the reported
    Ritz residual; converged extreme eigenvalues agree with eigh."""
    n = 400
    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.r_[np.linspace(10, 4, 6), rng.uniform(-0.5, 0.5, n - 9), [-2.0, -3.0, -5.0]]
    A = (U * lam) @ U.T
    r = extreme_eigenpairs(lambda v: A @ v, n, 3, method=method, max_iter=80,
                           return_vectors=True, tol=1e-10)
    assert r.converged
    np.testing.assert_allclose(r.top, [10.0, 10 - 1.2, 10 - 2.4], rtol=1e-8)
    np.testing.assert_allclose(r.bottom, [-5.0, -3.0, -2.0], rtol=1e-8)
    for vecs, vals, res in ((r.top_vectors, r.top, r.top_residuals),
                            (r.bottom_vectors, r.bottom, r.bottom_residuals)):
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-10)
        true_res = np.linalg.norm(vecs @ A - vals[:, None] * vecs, axis=1)
        np.testing.assert_allclose(true_res, res, atol=1e-8)


def test_lanczos_and_arnoldi_agree():
    A = _random_symmetric(200, 5)
    a = extreme_eigenpairs(lambda v: A @ v, 200, 4, method="lanczos", max_iter=60, seed=2)
    b = extreme_eigenpairs(lambda v: A @ v, 200, 4, method="arnoldi", max_iter=60, seed=2)
    np.testing.assert_allclose(a.top, b.top, rtol=1e-8)
    np.testing.assert_allclose(a.bottom, b.bottom, rtol=1e-8)


def test_deterministic_and_seeded():
    A = _random_symmetric(300, 7)
    run = lambda seed: extreme_eigenpairs(lambda v: A @ v, 300, 3, max_iter=20, seed=seed)  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a.ritz_values, b.ritz_values)
    assert not np.array_equal(a.ritz_values, c.ritz_values)  # 20 steps: not yet converged


def test_early_stop_on_convergence():
    lam = np.r_[np.full(5, 0.0), 100.0, -100.0]
    A = np.diag(np.r_[lam, np.zeros(93)])
    r = extreme_eigenpairs(lambda v: A @ v, 100, 1, max_iter=100, tol=1e-8)
    assert r.converged and r.num_iter < 10  # rank-2 operator: invariant subspace after 3 steps
    np.testing.assert_allclose([r.top[0], r.bottom[0]], [100.0, -100.0])


def test_bad_arguments_name_the_value():
    A = np.eye(10)
    with pytest.raises(InvalidOptionError, match="method must be one of"):
        extreme_eigenpairs(lambda v: A @ v, 10, 2, method="power")
    with pytest.raises(InvalidOptionError, match="k must be an integer in"):
        extreme_eigenpairs(lambda v: A @ v, 10, 11)
    with pytest.raises(InvalidOptionError, match="max_iter=3 is too small"):
        extreme_eigenpairs(lambda v: A @ v, 10, 2, max_iter=3)
    with pytest.raises(ShapeError, match=r"expected \(10,\)"):
        extreme_eigenpairs(lambda v: v[:5], 10, 2)


# ---- memory: only D-length vectors are kept ---------------------------------------------------

def test_krylov_state_holds_only_sketch_dimension_arrays():
    """Every array the iteration keeps between matvecs has trailing size D or the Krylov size,
    never N; and the memory retained while iterating is O(m D), not O(m N)."""
    n_big, d, m = 2**16, 128, 30
    bulk = np.random.default_rng(0).uniform(-0.1, 0.1, n_big - 3)
    H = PlantedHessian(np.r_[[5.0, 3.0, -2.0], bulk], seed=0)
    op = sk.Sketch(algo="affd", in_dim=n_big, out_dim=d, seed=0)
    matvec = sketched_operator(H, op)
    matvec(np.ones(d))  # warm caches of the sketch before measuring
    seen = []

    def inspect(state):
        shapes = {name: a.shape for name, a in state.arrays().items()}
        for name, shape in shapes.items():
            assert n_big not in shape, f"{name} has an N-sized axis: {shape}"
        assert shapes["basis"] == (m + 1, d)
        extra = [v for v in vars(state).values() if isinstance(v, np.ndarray)]
        assert all(n_big not in a.shape for a in extra)
        seen.append(tracemalloc.get_traced_memory()[0])

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        r = extreme_eigenpairs(matvec, d, 2, max_iter=m, tol=1e-300, callback=inspect)
    finally:
        tracemalloc.stop()
    assert r.num_iter == m and len(seen) == m
    assert r.krylov_nbytes == (m + 1) * d * 8 + (m + 1) * m * 8
    # Memory retained between iterations grows by at most a few D-vectors per step, far below
    # one N-vector per step (N * 8 = 512 KiB here).
    growth = max(seen) - base
    assert growth < r.krylov_nbytes + 4 * n_big * 8, growth
    assert (seen[-1] - seen[0]) < (m - 1) * n_big * 8 / 10


# ---- derived quantities -----------------------------------------------------------------------

def test_rneg_and_outliers():
    assert rneg(10.0, -2.5) == pytest.approx(0.25)
    assert rneg(10.0, 1.0) == 0.0
    assert math.isnan(rneg(-1.0, -2.0))
    top = np.array([10.0, 5.0, 2.5, 1.9, 0.1])
    np.testing.assert_allclose(outlier_ratios(top), [1, 0.5, 0.25, 0.19, 0.01])
    assert count_outliers(top) == 3
    assert count_outliers(top, threshold=0.15) == 4
    with pytest.raises(InvalidOptionError, match=r"in \(0, 1\)"):
        count_outliers(top, threshold=1.5)


@given(seed=st.integers(0, 2**16), r=st.integers(0, 5))
def test_gradient_alignment_is_a_projection_fraction(seed, r):
    rng = np.random.default_rng(seed)
    d = 20
    V = rng.standard_normal((r, d))
    g = rng.standard_normal(d)
    a = gradient_alignment(g, V)
    assert 0.0 <= a <= 1.0 + 1e-12
    if r:
        g_in = V.T @ rng.standard_normal(r)
        assert gradient_alignment(g_in, V) == pytest.approx(1.0)
        Q, _ = np.linalg.qr(V.T)
        g_out = g - Q @ (Q.T @ g)
        assert gradient_alignment(g_out, V) == pytest.approx(0.0, abs=1e-12)


def test_alignment_on_exact_planted_operator():
    """Unsketched (D = N): a gradient built from known eigenvector components has a known
    alignment with the outliers."""
    n = 512
    H = PlantedHessian(np.r_[[9.0, 6.0, 4.0], np.linspace(-0.1, 0.2, n - 4), [-1.0]], seed=1)
    g = 3.0 * H.eigenvector(0) + 4.0 * H.eigenvector(10)  # 9 / 25 of |g|^2 on the outliers
    res = operator_spectrum(H, n, k=4, gradient=g, max_iter=80)
    assert res.n_outliers == 3
    assert res.alignment == pytest.approx(9 / 25, abs=1e-6)


# ---- the sketched planted spectrum ------------------------------------------------------------

@pytest.mark.parametrize("algo,d", [("affd", 1024), ("qk", 1024), ("fjl", 1024), ("ffd", 1024),
                                    ("afjl", 2048)])
@pytest.mark.parametrize("sketch_seed", [0, 1])
def test_sketched_lanczos_recovers_planted_spectrum(algo, d, sketch_seed):
    H = _planted()
    op = sk.Sketch(algo=algo, in_dim=N, out_dim=d, seed=sketch_seed)
    res = operator_spectrum(sketched_operator(H, op), d, k=6, num_params=N, seed=0)
    # the planted eigenvalues have converged (bulk Ritz values at the ends need not)
    assert np.r_[res.top_residuals[:5], res.bottom_residuals[:2]].max() < 1e-4 * res.top[0]
    est = np.r_[res.top[:5], res.bottom[:2]]
    truth = np.r_[OUTLIERS, NEGATIVES]
    rel = np.abs(est - truth) / np.abs(truth)
    sigma = math.sqrt(2 / d)
    assert rel.max() < 5 * sigma, (rel, 5 * sigma)
    assert rel.mean() < 3 * sigma, (rel, 3 * sigma)
    # no spurious outliers or negative eigenvalues out of the (N/D-amplified) bulk
    assert res.top[5] < 0.5 * OUTLIERS[-1] and res.bottom[2] > 0.5 * NEGATIVES[-1]
    assert count_outliers(res.top, threshold=0.1) == 5
    assert res.rneg == pytest.approx(6.0 / 50.0, rel=10 * sigma)
    assert res.krylov_nbytes < res.unsketched_krylov_nbytes * d / N * 1.5
