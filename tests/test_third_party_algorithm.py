"""The third-party path for a sketch algorithm: install docs/examples/sketchcore-example-algorithm
with pip into a folder of its own, and use the algorithm from a fresh interpreter through its
entry point (group ``sketchcore.algorithms``), on every usable backend, through the conformance
suite, ``out_dim="auto"`` and ``sketchcore info``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "sketchcore-example-algorithm"

USE_IT = r"""
import array_api_compat.numpy as anp
import numpy as np
import sketchcore as sk
from sketchcore.registry import registry
from sketchcore.testing import check_backend, to_numpy

assert "rademacher" in sk.algorithms(), sk.algorithms()
assert registry().sources["rademacher"] == "rademacher"
cls = registry().algorithms["rademacher"]
assert issubclass(cls, sk.SketchAlgorithm) and cls.__module__ == "sketchcore_example_algorithm"

rng = np.random.default_rng(0)
x = rng.standard_normal((4, 500))
y = rng.standard_normal((4, 64))
op = sk.Sketch(algo="rademacher", in_dim=500, out_dim=64, seed=3)
ref_x = op.apply(x, backend="numpy")
ref_y = op.transpose(y, backend="numpy")
assert ref_x.shape == (4, 64) and ref_y.shape == (4, 500)
assert abs(np.sum(ref_x * y) - np.sum(x * ref_y)) < 1e-9 * np.abs(ref_x).sum()  # adjoint
assert op.describe()["params_sha256"] == sk.Sketch(algo="rademacher", in_dim=500, out_dim=64,
                                                   seed=3).describe()["params_sha256"]
for b in sk.backends():  # the same map on every usable backend
    if not b.usable:
        continue
    be = registry().backend(b.name)
    got = to_numpy(op.apply(be.asarray(x.astype(np.float32)), backend=b.name))
    np.testing.assert_allclose(got, ref_x, rtol=0, atol=1e-4 * np.abs(ref_x).max())
# unbiased: the mean of ||Phi x||^2 / ||x||^2 over seeds is 1 within 5 standard errors
r = np.array([np.sum(sk.sketch(x[0], algo="rademacher", out_dim=32, seed=s) ** 2)
              for s in range(100)]) / np.sum(x[0] ** 2)
assert abs(r.mean() - 1) < 5 * r.std(ddof=1) / 10, r.mean()
assert sk.Sketch(algo="rademacher", in_dim=500).out_dim == 500  # auto, capped at max_out_dim
print("cases", check_backend(sk.Backend(anp)))  # the conformance suite runs it too
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example installed with pip into its own target folder (from a copy of its source,
    so the build leaves nothing in the repository)."""
    root = tmp_path_factory.mktemp("third_party_algorithm")
    src = root / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--quiet", "--target", str(target),
         str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def _run(args, target, cwd):
    # target first, then whatever PYTHONPATH already held (e.g. the tree under test)
    path = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("SKETCHCORE_DISABLE_PLUGINS", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def test_pip_installs_one_module_and_one_entry_point(installed):
    assert (installed / "sketchcore_example_algorithm.py").is_file()
    (dist,) = installed.glob("sketchcore_example_algorithm-*.dist-info")
    text = (dist / "entry_points.txt").read_text()
    assert "[sketchcore.algorithms]" in text and "rademacher = sketchcore_example_algorithm" in text


def test_installed_algorithm_is_discovered_used_and_conforms(installed, tmp_path):
    proc = _run(["-c", USE_IT], installed, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cases" in proc.stdout


def test_cli_lists_the_installed_algorithm(installed, tmp_path):
    proc = _run(["-m", "sketchcore.cli", "info"], installed, tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("rademacher"))
    assert "example plugin" in line
