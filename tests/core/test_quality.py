"""``sketchcore.quality`` (the report on the user's vectors), ``sketchcore quality FILE.npy``, the
calibration behind ``variance_factor``, and ``sketchcore info`` without array-library imports."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import sketchcore as sk
from sketchcore.cli import main
from sketchcore.quality import calibrate, jl_min_dim


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 4000))
    # correlated vectors (a few directions plus noise), like gradients of related examples
    return (rng.standard_normal((60, 6)) @ base + 0.5 * rng.standard_normal((60, 4000))).astype(
        np.float32)


def test_report_measures_distortion_and_recommends(vectors):
    rep = sk.quality(vectors, algo=["affd", "srht"], out_dims=[32, 256, 2048], target=0.2)
    assert [(r["algo"], r["out_dim"]) for r in rep.rows] == [
        (a, d) for a in ("affd", "srht") for d in (32, 256, 2048)]
    for algo in ("affd", "srht"):
        rows = [r for r in rep.rows if r["algo"] == algo]
        assert rows[0]["pair_max"] > rows[-1]["pair_max"]  # more D, less distortion
        assert rows[-1]["pearson"] > 0.99 and rows[-1]["pair_p95"] <= rows[-1]["pair_max"]
        ok = [r["out_dim"] for r in rows if max(r["norm_max"], r["pair_max"]) <= 0.2]
        assert rep.recommended[algo] == (ok[0] if ok else None)
        assert rep.auto[algo] == sk.auto_out_dim(4000, algo, eps=0.2, n_vectors=60)
    pytest.importorskip("sklearn")
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    assert rep.jl_min_dim == johnson_lindenstrauss_min_dim(60, eps=0.2) == jl_min_dim(60, 0.2)
    text = str(rep)
    assert "johnson_lindenstrauss_min_dim(n_samples=60, eps=0.2)" in text
    assert "smallest D tried that reaches it" in text


def test_default_dims_stop_below_the_input_size_and_bad_input_is_refused():
    x = np.random.default_rng(1).standard_normal((5, 300))
    rep = sk.quality(x, algo="sjlt")
    assert [r["out_dim"] for r in rep.rows] == [16, 32, 64, 128, 256]
    with pytest.raises(sk.ShapeError):
        sk.quality(np.zeros((2, 3, 4)))
    with pytest.raises(sk.InvalidOptionError, match="eps must be"):
        sk.quality(x, target=1.5)
    with pytest.raises(sk.UnknownNameError):
        sk.quality(x, algo="nope")


def test_cli_prints_the_table_and_draws_the_plot(vectors, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "grads.npy"
    np.save(path, vectors)
    png = tmp_path / "q.png"
    assert main(["quality", str(path), "--algo", "affd,sjlt", "--out-dims", "64,512",
                 "--target", "0.3", "--plot", str(png), "--max-vectors", "40"]) == 0
    out = capsys.readouterr().out
    assert "sketch quality on 40 vectors of N = 4000" in out and "sjlt" in out
    assert png.stat().st_size > 1000
    with pytest.raises(SystemExit) as bad:
        main(["quality", str(path), "--out-dims", "6x4"], report_errors=True)
    assert bad.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_calibrate_gives_about_one_for_a_dense_gaussian(vectors):
    got = calibrate(vectors[:30], "dense", [128], seeds=3)
    norm_f, pair_f = got[128]
    assert 0.5 < norm_f < 1.6 and 0.5 < pair_f < 1.6, got


def _run_cli(*args):
    env = {**os.environ}
    env.pop("SKETCHCORE_DISABLE_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "sketchcore.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_info_imports_no_array_library_and_check_tests_backends():
    code = ("import sys\nfrom sketchcore.cli import main\nassert main(['info']) == 0\n"
            "heavy = {'torch', 'jax', 'numba', 'cupy', 'sklearn'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    took = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "numpy    priority 0   found; not checked whether usable" in proc.stdout
    assert "sjlt" in proc.stdout and "srht" in proc.stdout
    assert took < 10, took  # well under 2 s on an idle machine; this leaves room for a busy one
    checked = _run_cli("info", "--check")
    assert checked.returncode == 0, checked.stderr
    assert "numpy    priority 0   usable" in checked.stdout
    assert "not checked" not in checked.stdout
