"""Public test support for backend authors.

``check_backend(MyBackend())`` runs every kernel contract of ``sketchcore.Backend`` against the
portable reference kernels and raises ``AssertionError`` naming each failing kernel and case; a
backend's whole test suite can be that one call. ``sketchcore.testing.strategies`` has hypothesis
strategies over sizes, batch shapes, dtypes, seeds and algorithm options (it needs hypothesis;
importing ``sketchcore.testing`` itself needs only numpy).
"""

from __future__ import annotations

from .conformance import algorithm_variants, check_backend, to_numpy

__all__ = ["check_backend", "algorithm_variants", "to_numpy", "strategies"]


def __getattr__(name: str):
    # ``strategies`` imports hypothesis, so it is loaded only when asked for.
    if name == "strategies":
        import importlib

        return importlib.import_module(f"{__name__}.strategies")
    raise AttributeError(f"module 'sketchcore.testing' has no attribute {name!r}")
