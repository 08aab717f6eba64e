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
    # site first, then whatever PYTHONPATH already held (e.g. the tree under test)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
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


# ---- more ways a third-party plugin can be broken ------------------------------------------------
# Each test installs one small plugin into a temporary folder (a module plus a dist-info with its
# entry point, put on PYTHONPATH) and runs sketchcore in a subprocess, as a user would.


def make_site(root, plugins):
    """A folder of distributions: ``plugins`` maps an entry-point name to
    ``(group, module source)``; each becomes the module ``sketchcore_test_<name>``."""
    site = root / "site"
    for name, (group, source) in plugins.items():
        module = f"sketchcore_test_{name}"
        dist = site / f"{module}-0.1.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}\n")
        (site / f"{module}.py").write_text(source)
    return site


BACKEND_TEMPLATE = '''
import numpy as np

import sketchcore


class TestBackend(sketchcore.Backend):
    name = "{name}"
    array_module = "numpy"
    priority = 1000  # above every in-repo backend: backend=None asks it first

    def namespace(self):
        import array_api_compat.numpy as xp

        return xp
{methods}

@sketchcore.hookimpl
def sketchcore_register_backends(register):
    register(TestBackend())
'''

OWNS_RAISES = BACKEND_TEMPLATE.format(name="ownsbad", methods='''
    calls = 0

    def owns(self, x):
        type(self).calls += 1
        raise RuntimeError("owns exploded on " + type(x).__name__)
''')

CHECK_RAISES = BACKEND_TEMPLATE.format(name="checkbad", methods='''
    def owns(self, x):
        return isinstance(x, np.ndarray)

    def check(self):
        raise ValueError("check exploded")
''')

ADD_CLI_RAISES = '''
import sketchcore


def add_cli(subparsers):
    p = subparsers.add_parser("clibad", help="a subcommand that never finishes being built")
    p.add_argument("--x")
    raise RuntimeError("add_cli exploded")


@sketchcore.hookimpl
def sketchcore_register_analyses(register):
    register(sketchcore.Analysis(name="clibad", summary="an analysis with a broken CLI",
                                 module="sketchcore_test_clibad", add_cli=add_cli))
'''

EXIT_AT_IMPORT = 'import sys\n\nsys.exit("exitbad refuses to load here")\n'

EXIT_IN_HOOK = '''
import sys

import sketchcore


@sketchcore.hookimpl
def sketchcore_register_backends(register):
    sys.exit(3)
'''

UNKNOWN_HOOK = '''
import sketchcore


@sketchcore.hookimpl
def sketchcore_register_backend(register):  # typo: the hook is sketchcore_register_backends
    pass
'''

NUMPY_STILL_WORKS = r"""
import numpy as np
import sketchcore as sk

x = np.random.default_rng(0).standard_normal((3, 300))
ref = sk.sketch(x, algo="affd", out_dim=16, seed=0, backend="numpy")
y = sk.sketch(x, algo="affd", out_dim=16, seed=0)
assert y.shape == (3, 16) and np.allclose(y, ref), y
"""

TORCH_STILL_WORKS = r"""
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    t = torch.as_tensor(x)
    yt = sk.sketch(t, algo="affd", out_dim=16, seed=0)
    assert isinstance(yt, torch.Tensor) and np.allclose(yt.numpy(), ref)
"""


def _plugin_run(tmp_path, plugins, args):
    return _run(args, make_site(tmp_path, plugins), tmp_path)


def _info_line(stdout, name):
    return next(ln for ln in stdout.splitlines() if ln.strip().startswith(name + " "))


def test_owns_that_raises_is_skipped_and_reported(tmp_path):
    code = NUMPY_STILL_WORKS + TORCH_STILL_WORKS + r"""
from sketchcore.registry import registry

reg = registry()
info = {b.name: b for b in sk.backends()}
bad = info["ownsbad"]
assert not bad.usable and bad.source == "ownsbad", bad
assert bad.reason.startswith("owns() raised RuntimeError: owns exploded"), bad.reason
assert info["numpy"].usable
# after the first call per array type the choice is a cached dict lookup: owns() is not asked again
calls = type(reg.backends["ownsbad"]).calls
for _ in range(3):
    sk.sketch(x, algo="affd", out_dim=16, seed=0)
assert type(reg.backends["ownsbad"]).calls == calls, calls
assert reg.backend_for(x).name != "ownsbad"
print("ok")
"""
    proc = _plugin_run(tmp_path, {"ownsbad": ("sketchcore.backends", OWNS_RAISES)},
                       ["-c", code])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_cli_info_reports_a_backend_whose_owns_raises(tmp_path):
    proc = _plugin_run(tmp_path, {"ownsbad": ("sketchcore.backends", OWNS_RAISES)},
                       ["-m", "sketchcore.cli", "info"])
    assert proc.returncode == 0, proc.stderr
    line = _info_line(proc.stdout, "ownsbad")
    assert "not usable" in line and "owns() raised RuntimeError" in line, line


def test_check_that_raises_is_reported_as_not_usable(tmp_path):
    code = NUMPY_STILL_WORKS + r"""
info = {b.name: b for b in sk.backends()}
bad = info["checkbad"]
assert not bad.usable and bad.reason == "check() raised ValueError: check exploded", bad
assert info["numpy"].usable
try:
    sk.sketch(x, algo="affd", out_dim=16, seed=0, backend="checkbad")
except sk.BackendUnavailableError as err:
    assert "check exploded" in str(err), err
else:
    raise AssertionError("naming the faulty backend should fail")
print("ok")
"""
    plugins = {"checkbad": ("sketchcore.backends", CHECK_RAISES)}
    proc = _plugin_run(tmp_path, plugins, ["-c", code])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
    proc = _run(["-m", "sketchcore.cli", "info", "--check"], tmp_path / "site", tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = _info_line(proc.stdout, "checkbad")
    assert "not usable: check() raised ValueError: check exploded" in line, line


ADD_CLI_RAISES_COMMAND = ADD_CLI_RAISES.replace("analyses(register)", "commands(register)").replace(
    'sketchcore.Analysis(name="clibad", summary="an analysis with a broken CLI",\n'
    '                                 module="sketchcore_test_clibad", add_cli=add_cli)',
    'sketchcore.Command(name="clibad", summary="a command with a broken CLI", add_cli=add_cli)')


@pytest.mark.parametrize(("group", "source"), [("sketchcore.analyses", ADD_CLI_RAISES),
                                               ("sketchcore.commands", ADD_CLI_RAISES_COMMAND)],
                         ids=["analysis", "command"])
def test_add_cli_that_raises_leaves_the_rest_of_the_cli_working(tmp_path, group, source):
    assert ("Command(" in source) == (group == "sketchcore.commands")  # the variant was made
    plugins = {"clibad": (group, source)}
    helped = _plugin_run(tmp_path, plugins, ["-m", "sketchcore.cli", "--help"])
    assert helped.returncode == 0, helped.stderr
    assert "info" in helped.stdout and "tda" in helped.stdout and "demo" in helped.stdout
    assert "clibad" not in helped.stdout  # the half-built subcommand was taken out again

    site = tmp_path / "site"
    info = _run(["-m", "sketchcore.cli", "info"], site, tmp_path)
    assert info.returncode == 0, info.stderr
    line = _info_line(info.stdout, "clibad")
    assert "add_cli() raised RuntimeError: add_cli exploded" in line, line

    called = _run(["-m", "sketchcore.cli", "clibad"], site, tmp_path)
    assert called.returncode == 2 and "invalid choice" in called.stderr, called.stderr

    code = ("from sketchcore.cli import build_parser\nfrom sketchcore.registry import registry\n"
            "build_parser()\nprint(registry().errors['clibad'])\n")
    errors = _run(["-c", code], site, tmp_path)
    assert errors.returncode == 0, errors.stderr
    assert "add_cli() raised RuntimeError: add_cli exploded" in errors.stdout


def test_sys_exit_at_import_or_in_a_hook_is_reported(tmp_path):
    code = NUMPY_STILL_WORKS + r"""
info = {b.name: b for b in sk.backends()}
assert not info["exitbad"].usable
assert "plugin called sys.exit('exitbad refuses to load here') at import" in info["exitbad"].reason
assert not info["hookexit"].usable
assert "sys.exit(3)" in info["hookexit"].reason, info["hookexit"].reason
assert info["numpy"].usable
print("ok")
"""
    plugins = {"exitbad": ("sketchcore.backends", EXIT_AT_IMPORT),
               "hookexit": ("sketchcore.backends", EXIT_IN_HOOK)}
    proc = _plugin_run(tmp_path, plugins, ["-c", code])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
    proc = _run(["-m", "sketchcore.cli", "info"], tmp_path / "site", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sys.exit" in _info_line(proc.stdout, "exitbad")


def test_hook_with_a_misspelled_name_is_reported(tmp_path):
    code = NUMPY_STILL_WORKS + r"""
info = {b.name: b for b in sk.backends()}
assert not info["typo"].usable
assert "sketchcore_register_backend" in info["typo"].reason, info["typo"].reason
print("ok")
"""
    proc = _plugin_run(tmp_path, {"typo": ("sketchcore.backends", UNKNOWN_HOOK)}, ["-c", code])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
