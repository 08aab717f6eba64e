"""The import structure of every package: each module imports on its own, no package has an import
cycle (imports inside functions included), and the core imports no array framework.

The cycle check reads the source (``ast``) rather than importing it: an import inside a function
hides a cycle from Python until that function runs, and here it is an edge like any other.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(
    [ROOT / "sketchcore"]
    + [p for p in (ROOT / "backends").iterdir() if (p / "__init__.py").exists()]
    + [p for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()]
)
#: array frameworks the core must never import (they belong to backends)
HEAVY = ("torch", "jax", "jaxlib", "cupy", "numba", "flax", "transformers")


def module_names(package: Path) -> list[str]:
    """Dotted names of the package and every module under it."""
    out = []
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def _source_of(package: Path, name: str) -> Path:
    rel = Path(*name.split("."))
    init = package.parent / rel / "__init__.py"
    return init if init.exists() else (package.parent / rel).with_suffix(".py")


# ---- (a) every module imports at top level in a fresh interpreter ----------------------------
_IMPORT_ALL = textwrap.dedent(
    """
    import importlib, json, sys, traceback
    own = set(sys.argv[2].split(","))
    out = {}
    for name in sys.argv[1].split(","):
        try:
            importlib.import_module(name)
            out[name] = ["ok", ""]
        except ModuleNotFoundError as err:
            missing = (err.name or "").split(".")[0]
            kind = "error" if not missing or missing in own else "missing"
            out[name] = [kind, missing if kind == "missing" else traceback.format_exc()]
        except BaseException:
            out[name] = ["error", traceback.format_exc()]
    print(json.dumps(out))
    """
)
_IMPORTED: dict[str, dict] = {}


def _import_package(package: Path) -> dict:
    """{module: [status, detail]} from one fresh interpreter importing all of ``package``."""
    if package.name not in _IMPORTED:
        own = ",".join(p.name for p in PACKAGES)
        # this tree's packages first, whatever copy of sketchcore is installed
        path = os.pathsep.join(str(ROOT / d) for d in ("", "backends", "plugins"))
        env = {**os.environ, "PYTHONPATH": path + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run(
            [sys.executable, "-W", "ignore::DeprecationWarning", "-c", _IMPORT_ALL,
             ",".join(module_names(package)), own],
            capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        _IMPORTED[package.name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return _IMPORTED[package.name]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_module_imports_in_a_fresh_interpreter(package):
    """Each module imports at top level (no import-order accident, no cycle that only a fresh
    interpreter shows); one whose optional dependency is not installed is skipped, by name."""
    results = _import_package(package)
    broken = {m: detail for m, (status, detail) in results.items() if status == "error"}
    assert not broken, "\n\n".join(f"{m}:\n{tb}" for m, tb in broken.items())
    missing = {m: dep for m, (status, dep) in results.items() if status == "missing"}
    assert set(results) == set(module_names(package))
    if missing:
        pytest.skip("optional dependencies not installed: " + ", ".join(
            f"{m} needs {dep}" for m, dep in sorted(missing.items())))


# ---- (b) no import cycle inside a package, imports in functions included ----------------------
def _imports(tree: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that the module ``name`` imports anywhere in its source."""

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    deps = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [owner(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub; ``from pkg import name`` reads
            # pkg's namespace, so pkg itself is the dependency
            targets = [owner(f"{origin}.{a.name}") if f"{origin}.{a.name}" in modules
                       else owner(origin) for a in node.names]
        else:
            continue
        deps.update(t for t in targets if t is not None and t != name)
    return deps


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> modules of the same package it imports (module level and in functions)."""
    names = module_names(package)
    modules = set(names)
    graph = {}
    for name in names:
        path = _source_of(package, name)
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = _imports(tree, name, path.name == "__init__.py", modules)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_find_cycle_finds_a_cycle_through_a_function_level_import(tmp_path):
    """The checker itself: a cycle closed by an import inside a function is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import c\n")
    (pkg / "c.py").write_text("def g():\n    from . import a\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("import json\n")
    assert find_cycle(import_graph(pkg)) is None


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_package_has_no_import_cycle(package):
    cycle = find_cycle(import_graph(package))
    assert cycle is None, (
        f"import cycle in {package.name}: {' -> '.join(cycle)}; move what both sides need into "
        "a module of its own (api.py modules only re-export).")


# ---- (c) the core imports no array framework --------------------------------------------------
def heavy_imports(path: Path) -> list[str]:
    """``line: module`` for every import of a ``HEAVY`` framework in the file, at any depth
    (``import``, ``from ... import``, ``importlib.import_module("...")``, ``__import__``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if called in ("import_module", "__import__"):
                names = [node.args[0].value]
        found += [f"{node.lineno}: {n}" for n in names if n.split(".")[0] in HEAVY]
    return found


def test_heavy_import_check_sees_imports_inside_functions(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy\n\ndef f():\n    import torch.nn\n    from jax import numpy\n"
                   "    return importlib.import_module('cupy')\n")
    assert heavy_imports(bad) == ["4: torch.nn", "5: jax", "6: cupy"]


def test_core_imports_no_array_framework():
    """torch, jax, cupy, numba (and flax, transformers) are the backends' business: nothing
    under sketchcore/ imports them, at module level or in a function."""
    offenders = {str(p.relative_to(ROOT)): hits
                 for p in sorted((ROOT / "sketchcore").rglob("*.py")) if (hits := heavy_imports(p))}
    assert not offenders, (
        f"framework imports under sketchcore/: {offenders}; move that code into the framework's "
        "backend (backends/sketchcore_<name>) behind a Backend method.")
