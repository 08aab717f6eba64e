"""The machine-independent QR behind the Haar factors (``sketchcore.portable_qr``, used by
``_random.haar_rows`` for ``qk`` and ``preconditioner="q"``).

It must equal LAPACK's QR to rounding, give orthonormal factors, and give the same bits whatever
the memory layout, the panel width, numpy's SIMD kernels, the BLAS kernels or the thread count. One
machine cannot prove the same bits on every machine; what it can show is that nothing the result
depends on changes with those choices (LAPACK's QR, by contrast, changes its bits with the BLAS
kernel set, ``OPENBLAS_CORETYPE``, on this very machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sketchcore import _random
from sketchcore.portable_qr import householder_qr_positive

ROOT = Path(__file__).resolve().parents[2]


def lapack_haar_rows(seed: int, name: str, rows: int, cols: int) -> np.ndarray:
    """What ``haar_rows`` computed before: LAPACK's QR, signs of R's diagonal moved into Q."""
    g = _random.gaussians(seed, name, (cols, rows))
    q, r = np.linalg.qr(g)
    d = np.sign(np.diagonal(r))
    d[d == 0] = 1.0
    return (q * d).T


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("seed", [0, 1, 2**64 - 1])
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (1, 7), (8, 8), (16, 100), (64, 256),
                                            (100, 100), (200, 200), (256, 256)])
def test_equals_lapack_to_rounding(rows, cols, seed):
    ours = _random.haar_rows(seed, "qr-test", rows, cols)
    assert ours.shape == (rows, cols) and ours.dtype == np.float64 and ours.flags.c_contiguous
    assert np.max(np.abs(ours - lapack_haar_rows(seed, "qr-test", rows, cols))) < 1e-12


shapes = st.integers(1, 200).flatmap(lambda cols: st.tuples(st.integers(1, cols), st.just(cols)))


@given(shape=shapes, seed=st.integers(0, 2**64 - 1))
def test_haar_rows_properties(shape, seed):
    rows, cols = shape
    q = _random.haar_rows(seed, "qr-prop", rows, cols)
    g = _random.gaussians(seed, "qr-prop", (cols, rows))
    # orthonormal rows, to float64 precision
    assert np.max(np.abs(q @ q.T - np.eye(rows))) < 1e-13
    # q is Q^T of a QR of g with R's diagonal positive: R = q g is upper triangular, diagonal > 0
    r = q @ g
    scale = np.max(np.abs(g)) * np.sqrt(cols)
    assert np.max(np.abs(np.tril(r, -1)), initial=0.0) < 1e-13 * scale
    assert np.all(np.diagonal(r) > 0)
    # LAPACK's answer, to rounding. Q's sensitivity to rounding grows with g's condition number;
    # measured: at most 2.2e-14 for cond(g) up to 1e4 (sizes up to 256). The rare draw with a
    # condition number above 1e5 gets a proportionally larger allowance.
    allowed = 1e-12 * max(1.0, np.linalg.cond(g) / 1e5)
    assert np.max(np.abs(q - lapack_haar_rows(seed, "qr-prop", rows, cols))) < allowed
    # the same bits on every call
    assert np.array_equal(q, _random.haar_rows(seed, "qr-prop", rows, cols))


@given(shape=shapes, seed=st.integers(0, 2**32 - 1), panel=st.integers(1, 70))
def test_bits_do_not_depend_on_layout_or_panels(shape, seed, panel):
    """Each column undergoes the same operations whatever the input's memory order, the panel
    width or the panel layout: the bits are the same (numpy runs different loops for each)."""
    rows, cols = shape
    g = np.random.default_rng(seed).standard_normal((cols, rows))
    want_q, want_r = householder_qr_positive(g)
    big = np.zeros((2 * cols + 1, 3 * rows + 2))
    big[1::2, 2::3] = g  # a strided view with the same numbers
    for a in (np.asfortranarray(g), big[1::2, 2::3], g[::-1][::-1]):
        q, r = householder_qr_positive(a)
        assert np.array_equal(q, want_q) and np.array_equal(r, want_r)
    for layout in ("rows", "cols"):
        q, r = householder_qr_positive(g, layout=layout, panel=panel)
        assert np.array_equal(q, want_q) and np.array_equal(r, want_r)


def test_r_diagonal_and_reconstruction():
    g = np.random.default_rng(3).standard_normal((50, 20))
    q, r_diag = householder_qr_positive(g)
    r = q.T @ g
    assert np.all(r_diag > 0)
    np.testing.assert_allclose(np.diagonal(r), r_diag, rtol=1e-13)
    np.testing.assert_allclose(q @ np.triu(r), g, atol=1e-13 * np.max(np.abs(g)))


def test_degenerate_inputs():
    # columns already (alpha, 0, ..., 0): reflectors are the identity, signs come from alpha
    a = np.array([[-2.0, 1.0], [0.0, 3.0], [0.0, 0.0]])
    q, r_diag = householder_qr_positive(a)
    np.testing.assert_array_equal(r_diag, [2.0, 3.0])
    np.testing.assert_array_equal(q, [[-1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    # a zero column: R's diagonal is 0, Q's column still a unit vector orthogonal to the rest
    z = np.zeros((4, 2))
    z[:, 0] = [1.0, 2.0, 2.0, 0.0]
    q, r_diag = householder_qr_positive(z)
    assert r_diag[1] == 0.0 and r_diag[0] == 3.0
    np.testing.assert_allclose(q.T @ q, np.eye(2), atol=1e-15)
    # empty
    q, r_diag = householder_qr_positive(np.zeros((5, 0)))
    assert q.shape == (5, 0) and r_diag.shape == (0,)
    assert _random.haar_rows(0, "x", 0, 4).shape == (0, 4)
    with pytest.raises(ValueError, match="m >= n"):
        householder_qr_positive(np.zeros((2, 3)))


#: the Haar factors' bits, pinned (tests/data/fixed_maps.json pins whole maps the same way). A
#: failure is a change of every qk and preconditioner="q" map (another QR or random stream):
#: read tests/data/make_fixed_maps.py before changing these.
GOLDEN = {
    (0, "x", 8, 8): "c0e1e4398a3ff18553326abc139000e55ebfa1e5b9509ae66d5dddc2c5b4cc57",
    (7, "x", 3, 16): "8475257db979d35ea315923c9d435035d47086b535cc45f85e2f25709c1b13ff",
    (2**64 - 1, "qk/Q0", 16, 64): "8ef9df5b90eb303491bf3f7572344d189fc8b32319b833c220017f757ec7e1c5",
    (5, "pre1/haar0", 128, 128):
        "079df3d6197e2e8ced9cfcef8906ef852debcab2b83941133d1844dfe798de4b",
}


@pytest.mark.parametrize("key", sorted(GOLDEN, key=str), ids=str)
def test_golden_digests(key):
    assert digest(_random.haar_rows(*key)) == GOLDEN[key]


_PROBE = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np
    from sketchcore import _random
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_features__ as features
    out = {"features": sorted(k for k, v in features.items() if v), "digests": {}}
    for rows, cols in ((8, 8), (3, 50), (70, 70), (130, 257)):
        q = _random.haar_rows(11, "probe", rows, cols)
        out["digests"][f"{rows}x{cols}"] = hashlib.sha256(q.tobytes()).hexdigest()
    g = _random.gaussians(11, "probe", (120, 120))
    out["lapack"] = hashlib.sha256(np.linalg.qr(g)[0].tobytes()).hexdigest()
    print(json.dumps(out))
    """
)


def _probe(env_changes: dict) -> dict:
    env = {**os.environ, **env_changes}
    path = os.pathsep.join(str(ROOT / d) for d in ("", "plugins", "backends"))
    env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _dispatch_targets() -> list[str]:
    """numpy's runtime SIMD dispatch targets this CPU has (disabling them all leaves numpy on its
    baseline kernels, as on an older CPU)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def test_bits_do_not_depend_on_threads_simd_or_blas_kernels():
    """Fresh interpreters with 1 or 4 threads for every threaded library, with numpy's SIMD
    kernels limited to its baseline (no AVX2/AVX-512 loops), and with OpenBLAS forced onto
    another CPU's kernels, all give the same Haar factors to the bit."""
    threads = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    base = _probe({k: "1" for k in threads})
    variants = {
        "4 threads": {k: "4" for k in threads},
        "OpenBLAS Prescott kernels": {"OPENBLAS_CORETYPE": "Prescott"},
        "OpenBLAS Haswell kernels": {"OPENBLAS_CORETYPE": "Haswell"},
    }
    targets = _dispatch_targets()
    if targets:
        variants["numpy baseline SIMD"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(targets)}
    for label, env in variants.items():
        got = _probe(env)
        assert got["digests"] == base["digests"], label
        if label == "numpy baseline SIMD":  # the variant really ran other kernels
            assert not set(targets) & set(got["features"]), got["features"]
    # the in-process result is the same too
    for key, want in base["digests"].items():
        rows, cols = map(int, key.split("x"))
        assert digest(_random.haar_rows(11, "probe", rows, cols)) == want
