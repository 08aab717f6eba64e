"""A plugin whose module raises ImportError is reported with its error by
``sketchcore.backends()`` and ``sketchcore info``, and everything else keeps working."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BROKEN_MODULE = (
    'raise ImportError("sketchcore_broken_plugin needs libmissing.so, which is absent")\n'
)

USE_IT = r"""
import numpy as np
import sketchcore as sk

info = {b.name: b for b in sk.backends()}
broken = info["broken"]
assert not broken.usable, broken
assert "ImportError" in broken.reason and "libmissing.so" in broken.reason, broken.reason
assert info["numpy"].usable
x = np.random.default_rng(0).standard_normal((3, 300))
for backend in (None, "numpy"):
    y = sk.sketch(x, algo="qk", out_dim=16, seed=0, backend=backend)
    assert y.shape == (3, 16) and np.all(np.isfinite(y))
try:
    sk.sketch(x, algo="qk", out_dim=16, seed=0, backend="broken")
except sk.UnknownNameError as err:
    assert "libmissing.so" in str(err), err
else:
    raise AssertionError("naming the broken backend should fail")
print("ok")
"""


@pytest.fixture()
def broken_site(tmp_path):
    """A folder with a dist-info whose ``sketchcore.backends`` entry point names a module that
    raises ImportError when imported."""
    site = tmp_path / "site"
    dist = site / "sketchcore_broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sketchcore-broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[sketchcore.backends]\nbroken = sketchcore_broken_plugin\n")
    (site / "sketchcore_broken_plugin.py").write_text(BROKEN_MODULE)
    return site


def _run(args, site, cwd):
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("SKETCHCORE_DISABLE_PLUGINS", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def test_broken_plugin_is_reported_and_numpy_still_works(broken_site, tmp_path):
    proc = _run(["-c", USE_IT], broken_site, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_cli_info_shows_the_broken_plugin_with_its_error(broken_site, tmp_path):
    proc = _run(["-m", "sketchcore.cli", "info"], broken_site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("broken"))
    assert "not usable" in line and "ImportError" in line and "libmissing.so" in line
