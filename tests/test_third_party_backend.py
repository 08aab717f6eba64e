"""The third-party path: install docs/examples/sketchcore-example-backend the way a stranger
would (pip, into a folder of its own) and use it from a fresh interpreter through its entry point.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "sketchcore-example-backend"

USE_IT = r"""
import array_api_compat.numpy as anp
import numpy as np
import sketchcore as sk
from sketchcore.registry import registry
from sketchcore.testing import check_backend

info = {b.name: b for b in sk.backends()}
assert "example" in info, sorted(info)
ex = info["example"]
assert ex.usable and ex.reason is None and ex.source == "example", ex
be = registry().backend("example")
assert type(be).__module__ == "sketchcore_example" and type(be).fwht is not sk.Backend.fwht

x = np.random.default_rng(0).standard_normal((4, 1000)).astype(np.float32)
y = sk.sketch(x, algo="affd", out_dim=64, seed=1, backend="example")
ref = sk.sketch(x, algo="affd", out_dim=64, seed=1, backend=sk.Backend(anp))  # reference
assert y.shape == (4, 64) and y.dtype == np.float32
np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))
# backend=None keeps numpy arrays on a backend of higher priority than the example's -1
assert registry().backend_for(x).name != "example"
print("cases", check_backend("example"))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example installed with pip into its own target folder (from a copy of its source,
    so the build leaves nothing in the repository)."""
    root = tmp_path_factory.mktemp("third_party")
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


def _run(code_or_args, target, cwd):
    # target first, then whatever PYTHONPATH already held (e.g. the tree under test)
    path = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("SKETCHCORE_DISABLE_PLUGINS", None)
    args = [sys.executable, "-c", code_or_args] if isinstance(code_or_args, str) else \
        [sys.executable, *code_or_args]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_pip_installs_one_module_and_one_entry_point(installed):
    assert (installed / "sketchcore_example.py").is_file()
    (dist,) = installed.glob("sketchcore_example_backend-*.dist-info")
    text = (dist / "entry_points.txt").read_text()
    assert "[sketchcore.backends]" in text and "example = sketchcore_example" in text


def test_installed_backend_is_discovered_used_and_conforms(installed, tmp_path):
    proc = _run(USE_IT, installed, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cases" in proc.stdout


def test_cli_info_lists_the_installed_backend(installed, tmp_path):
    proc = _run(["-m", "sketchcore.cli", "info"], installed, tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("example"))
    assert "usable" in line and "not usable" not in line
