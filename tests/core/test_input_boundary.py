"""Inputs are validated at the boundary: before the operator cache, with short messages that name
the bad value and the fix, and sizes that cannot fit are refused before anything is allocated."""

from __future__ import annotations

import numpy as np
import pytest

import sketchcore as sk
from sketchcore import api
from sketchcore._errors import describe_value

X64 = np.sin(np.arange(64.0))


# ---- A: validation happens before the operator cache -------------------------------------------

@pytest.mark.parametrize("bad", [8.0, True, np.float64(8), np.float32(8.0), "8"])
def test_bad_out_dim_is_refused_even_when_a_valid_operator_is_cached(bad):
    sk.sketch(X64, algo="affd", out_dim=8, seed=0)  # caches the operator for out_dim=8
    for _ in range(2):
        with pytest.raises(sk.InvalidOptionError, match="out_dim must be a positive integer"):
            sk.sketch(X64, algo="affd", out_dim=bad, seed=0)


@pytest.mark.parametrize("bad", [0.0, True, np.float64(0), -1, 2**64])
def test_bad_seed_is_refused_even_when_a_valid_operator_is_cached(bad):
    sk.sketch(X64, algo="affd", out_dim=8, seed=0)
    for _ in range(2):
        with pytest.raises(sk.InvalidOptionError, match="seed"):
            sk.sketch(X64, algo="affd", out_dim=8, seed=bad)


@pytest.mark.parametrize("bad", [8.0, np.float64(8), True])
def test_bad_option_is_refused_even_when_a_valid_operator_is_cached(bad):
    sk.sketch(X64, algo="affd", out_dim=8, seed=0, max_block=8)
    for _ in range(2):
        with pytest.raises(sk.InvalidOptionError, match="max_block"):
            sk.sketch(X64, algo="affd", out_dim=8, seed=0, max_block=bad)


@pytest.mark.parametrize("bad", [["affd"], {"algo": "affd"}, {"affd"}, None, 3, b"affd"])
def test_algo_that_is_not_a_name(bad):
    for call in (
        lambda: sk.sketch(X64, algo=bad, out_dim=8, seed=0),
        lambda: sk.Sketch(algo=bad, in_dim=64, out_dim=8, seed=0),
    ):
        with pytest.raises(sk.UnknownNameError) as info:
            call()
        msg = str(info.value)
        assert describe_value(bad) in msg and "'affd'" in msg and "'qk'" in msg
        assert "algo must be one of" in msg


def test_equal_but_differently_typed_values_do_not_share_a_cache_entry():
    """The cache key is made of validated values and the types of the options."""
    api._OPS.clear()
    a = sk.sketch(X64, algo="affd", out_dim=np.int64(8), seed=np.uint8(0))
    b = sk.sketch(X64, algo="affd", out_dim=8, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(api._OPS) == 1  # numpy integers are validated to the same ints
    sk.sketch(X64, algo="qk", out_dim=8, seed=0, in_factors=(8, 8), out_factors=(4, 2))
    sk.sketch(X64, algo="qk", out_dim=8, seed=0, in_factors=[8, 8], out_factors=[4, 2])
    assert len(api._OPS) == 3  # options keep their types (a list and a tuple are two entries)


def test_unhashable_options_still_work_uncached():
    y = sk.sketch(X64, algo="qk", out_dim=8, seed=0, in_factors=[8, [8][0]], out_factors=[4, 2])
    assert y.shape == (8,)


# ---- B: no message embeds the repr of a huge input ---------------------------------------------

HUGE_LIST = [0.0] * 10**6
HUGE_ARRAY = np.zeros(10**6)
HUGE_STR = "x" * 10**6


def _huge_calls():
    op = sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=0)
    yield "sketch(list)", lambda: sk.sketch(HUGE_LIST, algo="affd", out_dim=8, seed=0)
    yield "sketch(str)", lambda: sk.sketch(HUGE_STR, algo="affd", out_dim=8, seed=0)
    yield "apply(list)", lambda: op.apply(HUGE_LIST)
    yield "apply(array)", lambda: op.apply(HUGE_ARRAY)
    yield "transpose(array)", lambda: op.transpose(HUGE_ARRAY)
    yield "apply(0-d)", lambda: op.apply(np.float64(1.0))
    for name in ("in_dim", "out_dim", "seed"):
        for bad in (HUGE_LIST, HUGE_ARRAY, HUGE_STR):
            kw = {"algo": "affd", "in_dim": 64, "out_dim": 8, "seed": 0, name: bad}
            yield f"Sketch({name}={type(bad).__name__})", lambda kw=kw: sk.Sketch(**kw)
    for bad in (HUGE_LIST, HUGE_ARRAY, HUGE_STR):
        yield "algo", lambda bad=bad: sk.Sketch(algo=bad, in_dim=64, out_dim=8, seed=0)
        yield "sketch algo", lambda bad=bad: sk.sketch(X64, algo=bad, out_dim=8, seed=0)
        yield "max_block", lambda bad=bad: sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=0,
                                                     max_block=bad)
        yield "preconditioner", lambda bad=bad: sk.Sketch(algo="afjl", in_dim=64, out_dim=8,
                                                          seed=0, preconditioner=bad)
        yield "nnz_per_row", lambda bad=bad: sk.Sketch(algo="fjl", in_dim=64, out_dim=8, seed=0,
                                                       nnz_per_row=bad)
        yield "in_factors", lambda bad=bad: sk.Sketch(algo="qk", in_dim=64, out_dim=8, seed=0,
                                                      in_factors=bad, out_factors=bad)
        yield "num_factors", lambda bad=bad: sk.Sketch(algo="qk", in_dim=64, out_dim=8, seed=0,
                                                       num_factors=bad)
        yield "option name", lambda bad=bad: sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=0,
                                                       **{HUGE_STR: bad})
        yield "backend", lambda bad=bad: sk.sketch(X64, algo="affd", out_dim=8, seed=0,
                                                   backend=bad)


@pytest.mark.parametrize("case", range(len(list(_huge_calls()))))
def test_errors_for_huge_inputs_are_short(case):
    name, call = list(_huge_calls())[case]
    with pytest.raises(Exception) as info:  # noqa: PT011 - any error, as long as it is short
        call()
    assert len(str(info.value)) < 1000, (name, len(str(info.value)))


def test_describe_value():
    assert describe_value(np.zeros((3, 4), dtype=np.float32)) == (
        "<numpy.ndarray of shape (3, 4) and dtype float32>")
    assert describe_value(8.0) == "8.0"
    assert len(describe_value(HUGE_STR)) <= 200
    assert len(describe_value(HUGE_LIST)) <= 200
    assert describe_value(np.float64(8)) == repr(np.float64(8))


# ---- C: documented dtypes and a torch tensor that requires grad ---------------------------------

def test_numpy_bfloat16_computes_and_returns_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    op = sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=0)
    xb = np.linspace(-1, 1, 64).astype(ml_dtypes.bfloat16)
    want = op(xb.astype(np.float32))
    for y in (op(xb), op.apply(xb, backend="numpy"), sk.sketch(xb, algo="affd", out_dim=8, seed=0)):
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, want, rtol=1e-6)
    yt = op.transpose(np.ones(8, dtype=ml_dtypes.bfloat16))
    assert yt.dtype == np.float32 and yt.shape == (64,)


def test_an_unsupported_dtype_is_refused_by_name():
    op = sk.Sketch(algo="affd", in_dim=4, out_dim=2, seed=0)
    with pytest.raises(sk.InvalidOptionError, match="dtype"):
        op(np.array(["a", "b", "c", "d"]))


def test_torch_tensor_that_requires_grad_on_the_numpy_backend_says_detach():
    torch = pytest.importorskip("torch")
    op = sk.Sketch(algo="affd", in_dim=64, out_dim=8, seed=0)
    x = torch.linspace(-1, 1, 64, dtype=torch.float64, requires_grad=True)
    with pytest.raises(sk.InvalidOptionError, match=r"\.detach\(\)"):
        op.apply(x, backend="numpy")
    with pytest.raises(sk.InvalidOptionError, match=r"\.detach\(\)"):
        sk.sketch(x, algo="affd", out_dim=8, seed=0, backend="numpy")
    y = op.apply(x.detach(), backend="numpy")
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y, op(x.detach().numpy()))
    assert op(x).requires_grad  # on its own backend the gradient still flows


# ---- D: sizes that cannot fit fail up front, naming the option and the bytes -------------------

@pytest.mark.parametrize(("algo", "padded"), [
    ("affd", "4294967296 = 2**32"), ("afjl", "4294967296 = 2**32"), ("fjl", "4294967296 = 2**32"),
    ("qk", "4294967296 = 2**32"), ("ffd", "2147483664"),  # ffd pads to blocks of next_pow2(D)
])
def test_padded_length_beyond_the_index_limit(algo, padded):
    """Refused up front (nothing allocated: this would be tens of GiB), saying how long the
    padded vector is, what the limit is, the bytes needed, and what to do instead."""
    with pytest.raises(sk.InvalidOptionError) as info:
        sk.Sketch(algo=algo, in_dim=2**31 + 1, out_dim=16, seed=0)
    msg = str(info.value)
    assert f"algo={algo!r}: in_dim=2147483649 pads each vector to {padded} coordinates" in msg
    assert "2**31" in msg and "bytes" in msg and "layout='blocks'" in msg


def test_fjl_nnz_per_row_that_cannot_fit():
    with pytest.raises(sk.InvalidOptionError) as info:
        sk.Sketch(algo="fjl", in_dim=1000, out_dim=16, seed=0, nnz_per_row=10**12)
    msg = str(info.value)
    assert "nnz_per_row=1000000000000" in msg and "Lower nnz_per_row" in msg
    assert f"{16 * 16 * 10**12 + 8 * 1024} bytes" in msg  # an index and a value per non-zero
    assert len(msg) < 1000


def test_haar_factors_that_cannot_fit():
    with pytest.raises(sk.InvalidOptionError, match="max_block") as info:
        sk.Sketch(algo="affd", in_dim=2**24, out_dim=16, seed=0, preconditioner="q",
                  max_block=2**24)
    assert "bytes" in str(info.value)
    with pytest.raises(sk.InvalidOptionError, match="in_factors") as info:
        sk.Sketch(algo="qk", in_dim=2**30, out_dim=16, seed=0, in_factors=(2**29, 2),
                  out_factors=(2**20, 1))
    assert "bytes" in str(info.value)


def test_dense_out_dim_limit_names_the_value_and_fix():
    with pytest.raises(sk.InvalidOptionError) as info:
        sk.Sketch(algo="dense", in_dim=10, out_dim=2**24 + 1, seed=0)
    msg = str(info.value)
    assert "out_dim=16777217" in msg and "16777216" in msg
    assert "use algo='dense'" not in msg  # the old hint pointed at the algorithm that refused


def test_jax_float64_after_a_float32_call_keeps_float64_parameters():
    """jax caches the conversion of a numpy array by identity; a parameter first moved while
    64-bit types were off must not come back float32-rounded once they are on."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    def x64():
        ctx = getattr(jax, "enable_x64", None)
        if callable(ctx):
            return ctx(True)
        from jax.experimental import enable_x64

        return enable_x64()

    x = np.sin(np.arange(4 * 1000.0)).reshape(4, 1000)
    for algo, options in [("qk", {}), ("afjl", {"preconditioner": "q"}), ("affd", {})]:
        op = sk.Sketch(algo=algo, in_dim=1000, out_dim=64, seed=3, **options)
        want = op.apply(x, backend="numpy")
        if jax.config.jax_enable_x64:
            pytest.skip("needs jax with 64-bit types off by default")
        op.apply(jnp.asarray(x, dtype=jnp.float32))
        with x64():
            got = np.asarray(op.apply(jnp.asarray(x)))
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * np.abs(want).max(),
                                   err_msg=algo)
