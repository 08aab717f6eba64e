"""The design-card call as typed (``seed`` defaults to 0, ``out_dim`` to ``"auto"``), the rule
behind ``out_dim="auto"``, its one log line, and the float32 warning of backends without float64."""

from __future__ import annotations

import logging
import warnings
from statistics import NormalDist

import numpy as np
import pytest
from conftest import backend_params

import sketchcore as sk
from sketchcore.quality import AUTO_MAX_OUT_DIM, auto_choice, jl_min_dim
from sketchcore.registry import registry
from sketchcore.testing import to_numpy

N = 3000


@pytest.mark.parametrize("name", backend_params())
def test_design_card_call_runs_as_typed(name):
    x = np.random.default_rng(0).standard_normal((4, N)).astype(np.float32)
    y = sk.sketch(x, algo="qk", backend=name)  # exactly as the design card writes it
    d = sk.auto_out_dim(N, "qk")
    want = sk.Sketch(algo="qk", in_dim=N, out_dim=d, seed=0).apply(x, backend="numpy")
    got = to_numpy(y)
    assert got.shape == (4, d) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * float(np.abs(want).max()))
    assert registry().backend(name).owns(y)  # the result lives in the named backend's library


def test_sketch_defaults_are_seed_0_and_auto():
    op = sk.Sketch(algo="affd", in_dim=100_000)
    assert op.seed == 0 and op.out_dim == sk.auto_out_dim(100_000, "affd")
    same = sk.Sketch(algo="affd", in_dim=100_000, out_dim=op.out_dim, seed=0)
    assert op.describe() == same.describe()
    other = sk.Sketch(algo="affd", in_dim=100_000, seed=1)
    assert other.describe()["params_sha256"] != op.describe()["params_sha256"]
    x = np.random.default_rng(1).standard_normal((2, 100_000))
    np.testing.assert_array_equal(sk.sketch(x, algo="affd"), op(x))


def test_auto_is_logged_once_and_refuses_other_strings(caplog):
    with caplog.at_level(logging.INFO, logger="sketchcore"):
        for _ in range(3):
            sk.Sketch(algo="srht", in_dim=12_345)
    lines = [r.getMessage() for r in caplog.records if "out_dim='auto'" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "algo='srht', in_dim=12345" in lines[0] and "johnson_lindenstrauss_min_dim" in lines[0]
    with pytest.raises(sk.InvalidOptionError, match="positive integer or 'auto'"):
        sk.Sketch(algo="affd", in_dim=100, out_dim="big")


def test_rule_matches_the_jl_bound_and_its_inputs():
    # c = 1 (dense): the Gaussian-tail bound is within 20% of scikit-learn's formula (5% at
    # eps = 0.1, n >= 100), and the rule picks the smallest power of two above it
    for n, eps in [(100, 0.1), (1000, 0.1), (10_000, 0.2), (50, 0.3)]:
        z = NormalDist().inv_cdf(1 - 0.05 / (n * (n + 1)))
        bound = 2 * z * z / eps**2
        assert abs(bound / jl_min_dim(n, eps) - 1) < 0.2, (n, eps, bound, jl_min_dim(n, eps))
        rule = auto_choice(10**8, "dense", eps=eps, n_vectors=n)
        assert rule.rule_out_dim >= bound > rule.rule_out_dim // 2
    # more vectors or a smaller eps never lower D; a larger variance factor raises it
    assert sk.auto_out_dim(10**6, "affd", n_vectors=10) <= sk.auto_out_dim(10**6, "affd")
    assert sk.auto_out_dim(10**6, "affd", eps=0.3) < sk.auto_out_dim(10**6, "affd", eps=0.05)
    assert sk.auto_out_dim(10**6, "dense") <= sk.auto_out_dim(10**6, "afjl")
    # caps: the input size, the algorithm's largest D, AUTO_MAX_OUT_DIM
    assert sk.auto_out_dim(300, "affd") == 300
    choice = auto_choice(10**7, "qk")
    assert choice.out_dim == AUTO_MAX_OUT_DIM and choice.capped and choice.eps_reached > 0.1
    assert "Capped at 65536" in choice.describe()
    assert sk.auto_out_dim(10, "qk", in_factors=(2, 2), out_factors=(2, 2)) == 4


@pytest.mark.parametrize("algo", ["affd", "sjlt", "srht", "fjl"])
def test_rule_keeps_its_promise_on_random_vectors(algo):
    """At the D the rule picks for n vectors and eps, the largest distortion over the n norms
    and n(n-1)/2 pairs stays within eps, for every one of several seeds (the rule allows a
    failure probability of 5% per seed)."""
    n, eps, dim = 40, 0.35, 20_000
    x = np.random.default_rng(3).standard_normal((n, dim))
    x[:, :5] *= 30  # a few large coordinates
    d = sk.auto_out_dim(dim, algo, eps=eps, n_vectors=n)
    worst = []
    for seed in range(4):
        rep = sk.quality(x, algo=algo, out_dims=[d], target=eps, seed=seed)
        row = rep.rows[0]
        worst.append(max(row["norm_max"], row["pair_max"]))
    assert max(worst) <= eps, (d, worst)


def test_float64_into_a_float32_backend_warns_once():
    info = {b.name: b for b in sk.backends()}
    if "jax" not in info or not info["jax"].usable:
        pytest.skip(f"jax: {info['jax'].reason if 'jax' in info else 'not installed'}")
    import jax

    if jax.config.jax_enable_x64:
        pytest.skip("jax has 64-bit floats enabled here: nothing to warn about")
    from sketchcore import api

    api._WARNED_FLOAT32.discard("jax")
    x = np.random.default_rng(0).standard_normal((2, 500))
    with pytest.warns(UserWarning, match="jax_enable_x64") as record:
        y = sk.sketch(x, algo="srht", out_dim=32, backend="jax")
    assert str(y.dtype) == "float32"
    assert record[0].filename == __file__  # the warning points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sk.sketch(x, algo="srht", out_dim=32, backend="jax")  # once per backend
