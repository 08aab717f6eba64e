"""Statistical checks, seeded, with tolerances derived from the estimator's own variance.

For each algorithm we draw S independent maps (seeds 0..S-1) and look at r_s = ||Phi_s x||^2/||x||^2.
Every sketch is built so that E r = 1 exactly; the sample mean has standard error std(r)/sqrt(S),
so we assert |mean - 1| <= 5 standard errors (a false alarm has probability ~6e-7 under a
normal approximation; the seeds are fixed, so the test is deterministic).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import sketchcore as sk
from sketchcore import kernels
from core.helpers import CONFIG_IDS, CONFIGS, small_blocks

S = 200
Z = 5.0


def _ratios(algo, options, x, d, seeds=S):
    n = x.shape[-1]
    out = []
    for s in range(seeds):
        op = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=s, **small_blocks(algo, options))
        out.append(op.apply(x, backend="numpy"))
    return np.stack(out)


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
def test_norm_is_unbiased(algo, options):
    x = np.random.default_rng(10).standard_normal(700)
    x[:10] *= 20  # a few large coordinates: unbiasedness must not depend on a flat input
    r = np.sum(_ratios(algo, options, x, 64) ** 2, axis=-1) / np.sum(x**2)
    se = r.std(ddof=1) / np.sqrt(S)
    assert abs(r.mean() - 1.0) <= Z * se, (r.mean(), se)


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
def test_inner_product_is_unbiased(algo, options):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(500)
    y = 0.6 * x + 0.8 * rng.standard_normal(500)  # correlated, so <x, y> is far from 0
    both = _ratios(algo, options, np.stack([x, y]), 64)
    est = np.sum(both[:, 0] * both[:, 1], axis=-1) / np.dot(x, y)
    se = est.std(ddof=1) / np.sqrt(S)
    assert abs(est.mean() - 1.0) <= Z * se, (est.mean(), se)


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
def test_distortion_shrinks_with_d(algo, options):
    """Mean |r - 1| falls as D grows (JL: roughly like 1/sqrt(D)); 4x more D must help clearly."""
    x = np.random.default_rng(12).standard_normal(1024)
    small = np.abs(np.sum(_ratios(algo, options, x, 16, 60) ** 2, -1) / np.sum(x**2) - 1).mean()
    large = np.abs(np.sum(_ratios(algo, options, x, 256, 60) ** 2, -1) / np.sum(x**2) - 1).mean()
    # expected ratio ~ sqrt(16/256) = 0.25; require at most 0.6 to leave room for sampling noise
    assert large < 0.6 * small, (small, large)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 64, 256, 1024])
def test_hadamard_kernel_equals_scipy(n):
    import array_api_compat.numpy as xp

    x = np.random.default_rng(n).standard_normal((3, n))
    want = x @ scipy.linalg.hadamard(n).T / np.sqrt(n)
    got = kernels.fwht(xp, x) / np.sqrt(n)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    plan = sk.KronPlan((n,))
    np.testing.assert_allclose(sk.Backend(xp).hadamard(x, plan), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sk.Backend(xp).hadamard_lookup_free(x, plan), want, atol=1e-12)


def test_theorem_3_1_ffd_fails_where_affd_holds():
    """Thm 3.1 made visible. FFD has no sign diagonal before its first Hadamard transform, so for
    the block input x_1 = H e_1 (a constant vector 1/sqrt(D) on the first block) we get
    H x_1 = e_1, G e_1 = g_1 e_1, and Phi x is g_1 times a (signed, permuted) Hadamard column:
    ||Phi x||^2 = g_1^2, a chi-square with ONE degree of freedom, whatever D is. So
    P(| ||Phi x||^2 - 1 | > 1/2) = P(g^2 < 1/2) + P(g^2 > 3/2) ~ 0.74. AFFD applies B first,
    which spreads x over all coordinates; its ratio has standard deviation ~ sqrt(2/D) ~ 0.09 at
    D = 256, so a deviation of 1/2 is a > 5 sigma event."""
    d, n = 256, 1024
    x = np.zeros(n)
    x[:d] = 1.0 / np.sqrt(d)
    fails = {}
    for algo in ("ffd", "affd"):
        r = np.sum(_ratios(algo, {}, x, d, 100) ** 2, axis=-1)
        fails[algo] = float(np.mean(np.abs(r - 1.0) > 0.5))
    # binomial(100, 0.74): mean 74, sd 4.4 -> > 50 is safe; affd: expected ~0 failures
    assert fails["ffd"] > 0.5, fails
    assert fails["affd"] < 0.05, fails
    # and FFD is fine on a generic input: the failure is specific to adversarial inputs
    g = np.random.default_rng(0).standard_normal(n)
    r = np.sum(_ratios("ffd", {}, g, d, 100) ** 2, axis=-1) / np.sum(g**2)
    assert np.mean(np.abs(r - 1.0) > 0.5) < 0.05


# ---- SJLT and SRHT: unbiased, and the variance their construction predicts -----------------------
SPARSE_AND_SAMPLED = [("sjlt", {}), ("sjlt", {"nnz_per_col": 1}), ("sjlt", {"nnz_per_col": 8}),
                      ("srht", {})]
SPARSE_IDS = ["sjlt", "sjlt-s1", "sjlt-s8", "srht"]


def _predicted_variance(algo, options, x, d):
    """Var(||Phi x||^2 / ||x||^2) over the seeds, exactly, with q = ||x||_4^4 / ||x||_2^4.

    SJLT (s blocks of m_b rows, one +-1/sqrt(s) per column and block): within a block two columns
    collide with probability 1/m_b, so Var = (2/s^2) sum_b (1/m_b) (1 - q); s = 1 is CountSketch's
    2(1 - q)/D. SRHT: z = H B x has E z_i^4 = (3 - 2q) ||x||^4 / N'^2, and R_S averages D of the
    N' values N' z_i^2 / ||x||^2 (mean exactly 1) without replacement:
    Var = 2(1 - q)/D * (N' - D)/(N' - 1)."""
    q = float(np.sum(x**4) / np.sum(x**2) ** 2)
    if algo == "sjlt":
        s = min(options.get("nnz_per_col", 4), d)
        sizes = [(b + 1) * d // s - b * d // s for b in range(s)]
        return 2.0 / s**2 * sum(1.0 / m for m in sizes) * (1 - q)
    n_pad = 1 << (x.shape[-1] - 1).bit_length()
    return 2.0 * (1 - q) / d * (n_pad - d) / (n_pad - 1)


@pytest.mark.parametrize(("algo", "options"), SPARSE_AND_SAMPLED, ids=SPARSE_IDS)
def test_sparse_and_sampled_sketches_are_unbiased_with_the_predicted_variance(algo, options):
    rng = np.random.default_rng(13)
    x = rng.standard_normal(700)
    x[:10] *= 20  # a few large coordinates (q = ||x||_4^4/||x||^4 far from 0)
    y = 0.6 * x + 0.8 * rng.standard_normal(700)
    both = _ratios(algo, options, np.stack([x, y]), 64)
    r = np.sum(both[:, 0] ** 2, axis=-1) / np.sum(x**2)
    se = r.std(ddof=1) / np.sqrt(S)
    assert abs(r.mean() - 1.0) <= Z * se, (r.mean(), se)
    ip = np.sum(both[:, 0] * both[:, 1], axis=-1) / np.dot(x, y)
    se_ip = ip.std(ddof=1) / np.sqrt(S)
    assert abs(ip.mean() - 1.0) <= Z * se_ip, (ip.mean(), se_ip)
    # the sample variance of r against the exact one, within 5 of its own standard errors
    # (sqrt((m4 - v^2) / S), m4 the sample's fourth central moment)
    want = _predicted_variance(algo, options, x, 64)
    got = r.var(ddof=1)
    m4 = np.mean((r - r.mean()) ** 4)
    se_var = np.sqrt(max(m4 - got**2, 0.0) / S)
    assert abs(got - want) <= Z * se_var, (got, want, se_var)


def test_sjlt_columns_have_s_distinct_entries_of_norm_one():
    op = sk.Sketch(algo="sjlt", in_dim=500, out_dim=30, seed=3, nnz_per_col=4)
    m = op.apply(np.eye(500), backend="numpy").T  # (D, N)
    assert np.all(np.count_nonzero(m, axis=0) == 4)
    np.testing.assert_allclose(np.sum(m**2, axis=0), 1.0, rtol=1e-12)
    for b in range(4):  # one entry in each block of rows
        assert np.all(np.count_nonzero(m[b * 30 // 4:(b + 1) * 30 // 4], axis=0) == 1)
    assert sk.Sketch(algo="sjlt", in_dim=500, out_dim=3, seed=3).options["nnz_per_col"] == 3


def test_srht_is_sampled_rows_of_a_signed_hadamard_matrix():
    op = sk.Sketch(algo="srht", in_dim=100, out_dim=12, seed=4)
    m = op.apply(np.eye(100), backend="numpy").T
    n_pad = 128
    rows = op.algorithm.params.host["S"]
    assert len(set(rows.tolist())) == 12 and np.all(np.diff(rows) > 0)  # without replacement
    want = np.sqrt(n_pad / 12) * (scipy.linalg.hadamard(n_pad) / np.sqrt(n_pad)
                                  * op.algorithm.params.host["B"])[rows][:, :100]
    np.testing.assert_allclose(m, want, atol=1e-12)
    full = sk.Sketch(algo="srht", in_dim=128, out_dim=128, seed=4)  # D = N': orthogonal
    q = full.apply(np.eye(128), backend="numpy")
    np.testing.assert_allclose(q.T @ q, np.eye(128), atol=1e-12)
