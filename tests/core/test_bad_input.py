"""The bad-input catalogue: each case gives a clear error or a documented result."""

from __future__ import annotations

import numpy as np
import pytest

import sketchcore as sk
from core.helpers import CONFIG_IDS, CONFIGS


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
def test_nan_and_inf_propagate_to_every_output(algo, options):
    """Documented: non-finite values are not checked; they propagate. Every sketch mixes all
    coordinates (H, dense or Kronecker factors), so one NaN makes every output NaN."""
    op = sk.Sketch(algo=algo, in_dim=100, out_dim=16, seed=0, **options)
    x = np.ones(100)
    x[7] = np.nan
    with np.errstate(invalid="ignore"):
        assert np.all(np.isnan(op(x)))
        x[7] = np.inf
        assert not np.any(np.isfinite(op(x)))


def test_wrong_last_axis():
    op = sk.Sketch(algo="affd", in_dim=100, out_dim=16, seed=0)
    with pytest.raises(sk.ShapeError, match="last axis to have size 100, got shape \\(3, 99\\)"):
        op(np.zeros((3, 99)))
    with pytest.raises(sk.ShapeError, match="size 16"):
        op.transpose(np.zeros(15))
    with pytest.raises(sk.ShapeError):
        op(np.float64(1.0))


@pytest.mark.parametrize("out_dim", [0, -3])
def test_out_dim_not_positive(out_dim):
    with pytest.raises(sk.InvalidOptionError, match="out_dim must be >= 1"):
        sk.Sketch(algo="qk", in_dim=100, out_dim=out_dim, seed=0)


@pytest.mark.parametrize("algo", ["fjl", "ffd", "affd", "afjl", "qk"])
def test_out_dim_too_large(algo):
    with pytest.raises(sk.InvalidOptionError, match="at most 128"):
        sk.Sketch(algo=algo, in_dim=100, out_dim=129, seed=0)
    sk.Sketch(algo=algo, in_dim=100, out_dim=128, seed=0)  # the padded size itself is allowed


@pytest.mark.parametrize("bad", [2.5, "10", None, True, 10.0, [3]])
def test_non_integer_sizes(bad):
    with pytest.raises(sk.InvalidOptionError, match="in_dim must be a positive integer"):
        sk.Sketch(algo="affd", in_dim=bad, out_dim=4, seed=0)
    with pytest.raises(sk.InvalidOptionError, match="out_dim must be a positive integer"):
        sk.Sketch(algo="affd", in_dim=64, out_dim=bad, seed=0)


def test_numpy_integer_sizes_are_accepted():
    op = sk.Sketch(algo="affd", in_dim=np.int64(64), out_dim=np.int32(8), seed=np.uint64(3))
    assert (op.in_dim, op.out_dim, op.seed) == (64, 8, 3)


@pytest.mark.parametrize("seed", [-1, 2**64, 10**30, 1.5, "0", None, False])
def test_bad_seeds(seed):
    with pytest.raises(sk.InvalidOptionError, match="seed"):
        sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=seed)


def test_largest_seed_is_fine():
    op = sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=2**64 - 1)
    assert np.all(np.isfinite(op(np.ones(64))))


def test_unknown_names_list_allowed_ones():
    with pytest.raises(sk.UnknownNameError, match="unknown algorithm 'afd'.*'affd'.*'qk'"):
        sk.Sketch(algo="afd", in_dim=64, out_dim=8, seed=0)
    with pytest.raises(sk.UnknownNameError, match="unknown backend 'numpyy'.*'numpy'"):
        sk.sketch(np.ones(64), algo="affd", out_dim=8, seed=0, backend="numpyy")
    with pytest.raises(sk.UnknownNameError, match="'max_block', 'preconditioner'"):
        sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=0, precond="fft")
    with pytest.raises(sk.UnknownNameError, match="'fft', 'hadamard', 'q'"):
        sk.Sketch(algo="afjl", in_dim=64, out_dim=8, seed=0, preconditioner="dct")
    with pytest.raises(KeyError):  # still a KeyError for callers that catch that
        sk.Sketch(algo="nope", in_dim=64, out_dim=8, seed=0)


@pytest.mark.parametrize("bad", [3, 0, 1000, 2.0])
def test_bad_max_block(bad):
    with pytest.raises(sk.InvalidOptionError, match="max_block"):
        sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=0, max_block=bad)


def test_bad_qk_factors():
    with pytest.raises(sk.InvalidOptionError, match="both in_factors and out_factors"):
        sk.Sketch(algo="qk", in_dim=64, out_dim=8, seed=0, in_factors=(8, 8))
    with pytest.raises(sk.InvalidOptionError, match="out_factors <= in_factors"):
        sk.Sketch(algo="qk", in_dim=64, out_dim=8, seed=0, in_factors=(8, 8), out_factors=(16, 1))
    with pytest.raises(sk.InvalidOptionError, match=">= in_dim"):
        sk.Sketch(algo="qk", in_dim=100, out_dim=8, seed=0, in_factors=(8, 8), out_factors=(4, 2))
    op = sk.Sketch(algo="qk", in_dim=60, out_dim=6, seed=0, in_factors=(6, 10), out_factors=(2, 3))
    assert op(np.ones(60)).shape == (6,)


def test_integer_and_bool_inputs_are_cast_to_the_default_float():
    op = sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=0)
    xi = np.arange(64)
    y = op(xi)
    assert y.dtype == np.float64  # numpy's default real floating dtype
    np.testing.assert_allclose(y, op(xi.astype(np.float64)))
    assert op(np.ones(64, dtype=bool)).dtype == np.float64


def test_half_precision_computes_in_float32():
    op = sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=0)
    x = np.linspace(-1, 1, 64)
    y = op(x.astype(np.float16))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, op(x.astype(np.float16).astype(np.float32)), rtol=1e-6)


def test_complex_input_is_refused():
    op = sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=0)
    with pytest.raises(sk.InvalidOptionError, match="complex"):
        op(np.ones(64, dtype=np.complex128))


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
def test_empty_batch(algo, options):
    op = sk.Sketch(algo=algo, in_dim=100, out_dim=16, seed=0, **options)
    assert op(np.zeros((0, 100))).shape == (0, 16)
    assert op.transpose(np.zeros((0, 4, 16))).shape == (0, 4, 100)


def test_not_an_array():
    with pytest.raises(TypeError, match="expected an array"):
        sk.Sketch(algo="affd", in_dim=3, out_dim=2, seed=0)(object())
    with pytest.raises(sk.ShapeError):
        sk.sketch([1.0, 2.0], algo="affd", out_dim=2, seed=0)


def test_bad_backend_argument():
    with pytest.raises(sk.InvalidOptionError, match="backend must be None"):
        sk.sketch(np.ones(8), algo="affd", out_dim=2, seed=0, backend=3)
