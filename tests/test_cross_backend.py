"""Cross-backend equivalence: the same ``Sketch`` is the same linear map on every backend.

Property-based over algorithm x preconditioner x sizes x batch shapes x dtypes x seeds
(``sketchcore.testing.strategies``): apply and transpose on each selected backend
(``SKETCHCORE_TEST_BACKENDS``, see conftest.py) agree with the numpy reference kernels. Also the
whole reference path on ``array_api_strict`` arrays, which proves that the core uses only the
array API standard.
"""

from __future__ import annotations

import array_api_compat
import array_api_compat.numpy as anp
import numpy as np
import pytest
from conftest import backend_params
from hypothesis import find, given

import sketchcore as sk
from sketchcore.registry import registry
from sketchcore.testing import algorithm_variants, strategies, to_numpy
from sketchcore.testing.conformance import RTOL

REFERENCE = sk.Backend(anp)


def _inputs(case):
    rng = np.random.default_rng(case["data_seed"])
    x = rng.standard_normal((*case["batch"], case["in_dim"])).astype(case["dtype"])
    y = rng.standard_normal((*case["batch"], case["out_dim"])).astype(case["dtype"])
    return x, y


def _assert_matches(got, want, rtol, what, floor=0.0):
    """``got`` equals ``want`` up to ``rtol`` times the largest entry of ``want`` (or ``floor``,
    the typical entry size, when that is larger: one or two outputs can be near-cancellations).

    Both sides run chains of orthogonal transforms, diagonals and short sums whose entries carry
    relative errors of a few eps * log2(N); relative to the output's largest entry they stay far
    below rtol (about 170 eps for float32 and 9000 eps for float64).
    """
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    if want.size == 0:
        return
    err = float(np.max(np.abs(got - want)))
    tol = rtol * max(float(np.max(np.abs(want))), floor)
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g} (rtol {rtol:g})"


@pytest.mark.parametrize("name", backend_params())
@given(case=strategies.sketch_cases(max_in_dim=1 << 11))
def test_apply_and_transpose_match_numpy_reference(name, case):
    op = sk.Sketch(algo=case["algo"], in_dim=case["in_dim"], out_dim=case["out_dim"],
                   seed=case["seed"], **case["options"])
    x_host, y_host = _inputs(case)
    be = registry().backend(name)
    x, y = be.asarray(x_host), be.asarray(y_host)
    # the dtype the backend really computes in (jax without x64 turns float64 into float32)
    dtype = "float64" if x.dtype == be.namespace().float64 else "float32"
    rtol = RTOL[dtype]
    fx = op.apply(x, backend=name)
    ty = op.transpose(y, backend=name)
    assert array_api_compat.array_namespace(fx) is array_api_compat.array_namespace(x)
    assert fx.dtype == x.dtype and ty.dtype == y.dtype
    want_fx = op.apply(x_host.astype(dtype), backend=REFERENCE)
    want_ty = op.transpose(y_host.astype(dtype), backend=REFERENCE)
    label = f"{name}: {op!r}, batch {case['batch']}, {dtype}"
    rows = max(1, int(np.prod(case["batch"])))  # typical entry: ||x|| / sqrt(D) per row
    per = np.sqrt(case["out_dim"] * rows)
    _assert_matches(to_numpy(fx), want_fx, rtol, label + " apply",
                    floor=float(np.linalg.norm(x_host)) / per)
    _assert_matches(to_numpy(ty), want_ty, rtol, label + " transpose",
                    floor=float(np.linalg.norm(y_host)) / per)


@pytest.mark.parametrize("algo,options", algorithm_variants(), ids=lambda v: str(v))
def test_reference_path_runs_on_array_api_strict(algo, options):
    """Every algorithm x preconditioner on array_api_strict (backend=None: the reference kernels
    on the strict namespace, with data-dependent shapes and boolean indexing switched off)."""
    xs = pytest.importorskip("array_api_strict")
    in_dim, out_dim = 300, 40
    extra = {"max_block": 16} if "preconditioner" in options else {}
    op = sk.Sketch(algo=algo, in_dim=in_dim, out_dim=out_dim, seed=7, **options, **extra)
    rng = np.random.default_rng(3)
    for dtype in ("float32", "float64"):
        x_host = rng.standard_normal((2, in_dim)).astype(dtype)
        y_host = rng.standard_normal((2, out_dim)).astype(dtype)
        with xs.ArrayAPIStrictFlags(data_dependent_shapes=False, boolean_indexing=False):
            x, y = xs.asarray(x_host), xs.asarray(y_host)
            fx, ty = op.apply(x), op.transpose(y)
            assert array_api_compat.array_namespace(fx, ty) is xs
            assert fx.dtype == getattr(xs, dtype) and ty.dtype == getattr(xs, dtype)
        _assert_matches(to_numpy(fx), op.apply(x_host, backend=REFERENCE), RTOL[dtype],
                        f"strict {algo} {options} apply {dtype}")
        _assert_matches(to_numpy(ty), op.transpose(y_host, backend=REFERENCE), RTOL[dtype],
                        f"strict {algo} {options} transpose {dtype}")


def test_strategies_reach_every_algorithm_variant_and_edge():
    """The strategies can produce every algorithm x preconditioner, empty batches, both dtypes,
    non-powers of two and the extreme seeds (hypothesis.find fails if one is unreachable)."""
    for algo, options in algorithm_variants():
        find(strategies.algorithm_configs(),
             lambda c, a=algo, o=options: c[0] == a and all(c[1].get(k) == v for k, v in o.items()))
    find(strategies.batch_shapes(), lambda b: 0 in b)
    find(strategies.batch_shapes(), lambda b: b == ())
    find(strategies.in_dims(), lambda n: n > 2 and n & (n - 1) != 0)
    find(strategies.seeds(), lambda s: s == 2**64 - 1)
    find(strategies.float_dtypes(), lambda d: d == "float64")
    case = find(strategies.sketch_cases(), lambda c: c["out_dim"] == c["in_dim"] > 1)
    sk.Sketch(algo=case["algo"], in_dim=case["in_dim"], out_dim=case["out_dim"],
              seed=case["seed"], **case["options"])
