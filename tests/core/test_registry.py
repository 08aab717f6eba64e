"""Discovery, registration, resolution, the CLI frame, and the no-heavy-imports rule."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sketchcore as sk
from sketchcore.registry import Registry


def test_builtin_algorithms_and_numpy_backend_are_registered():
    assert sk.algorithms() == ["affd", "afjl", "dense", "ffd", "fjl", "qk", "sjlt", "srht"]
    infos = {b.name: b for b in sk.backends()}
    assert infos["numpy"].usable and infos["numpy"].source == "numpy"


def test_every_in_repo_plugin_loads():
    from sketchcore.registry import registry

    reg = registry()
    assert reg.errors == {}, reg.errors


def test_backend_resolution_by_name_instance_class_and_array():
    x = np.ones(16)
    by_name = sk.resolve_backend("numpy", x)
    assert by_name.name == "numpy"
    assert sk.resolve_backend(by_name, x) is by_name
    assert isinstance(sk.resolve_backend(sk.Backend, x), sk.Backend)
    auto = sk.resolve_backend(None, x)
    assert auto.owns(x)


def test_generic_backend_for_unregistered_namespace():
    xps = pytest.importorskip("array_api_strict")
    be = sk.resolve_backend(None, xps.asarray([1.0]))
    assert be.name == "generic" and be.namespace() is xps


def test_duplicate_names_and_failing_hooks_are_reported():
    reg = Registry(groups=())
    reg.load()
    from sketchcore.hookspecs import hookimpl

    class Dup:
        @staticmethod
        @hookimpl
        def sketchcore_register_backends(register):
            register(sk.Backend())
            register(sk.Backend())

    import pluggy

    from sketchcore import hookspecs

    pm = pluggy.PluginManager("sketchcore")
    pm.add_hookspecs(hookspecs)
    pm.register(Dup(), name="dup")
    reg._call(pm, "sketchcore_register_backends", reg.backends, lambda b: b.name)
    assert "already registered" in reg.errors["dup"]
    assert "generic" in reg.backends  # the first registration stands


def test_unusable_backend_is_refused_with_reason():
    reg = Registry(groups=())
    reg.load()

    class Broken(sk.Backend):
        name = "broken"

        def namespace(self):
            raise ImportError("libbroken is not installed")

    reg.backends["broken"] = Broken()
    with pytest.raises(sk.BackendUnavailableError, match="libbroken is not installed"):
        reg.backend("broken")
    assert [i.reason for i in reg.info() if i.name == "broken"][0].startswith("ImportError")


def test_cli_info_lists_everything(capsys):
    from sketchcore.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("affd", "afjl", "dense", "ffd", "fjl", "qk", "numpy"):
        assert name in out


def test_importing_sketchcore_imports_no_heavy_library():
    """Importing the core, listing algorithms, and sketching a non-numpy, non-framework array
    (array_api_strict) must not import torch, jax, cupy or numba (plugin discovery included)."""
    pytest.importorskip("array_api_strict")
    code = textwrap.dedent(
        """
        import sys
        import sketchcore as sk
        import array_api_strict as xps
        sk.algorithms(); sk.analyses()
        y = sk.sketch(xps.ones((2, 100)), algo="affd", out_dim=8, seed=0)
        y = sk.Sketch(algo="qk", in_dim=100, out_dim=8, seed=0).transpose(xps.ones(8))
        heavy = [m for m in ("torch", "jax", "jaxlib", "cupy", "numba") if m in sys.modules]
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"


def test_analyses_are_analyses_and_demo_is_a_command():
    """``demo`` is a command (its own kind), not an analysis: ``sketchcore.analyses()`` does not
    list it, ``sketchcore demo`` still parses, and ``info`` shows it under commands."""
    from sketchcore.cli import build_parser
    from sketchcore.registry import registry

    assert sorted(sk.analyses()) == ["intrinsic_dim", "spectrum", "tda"]
    demo = registry().commands["demo"]
    assert isinstance(demo, sk.Command) and registry().sources["demo"] == "demo"
    args = build_parser().parse_args(["demo", "--quick", "--out", "report"])
    assert args.command == "demo" and args.quick and callable(args.func)
