"""sketchcore_spectrum: Hessian eigenvalues from sketched Hessian-vector products.

Lanczos/Arnoldi with full re-orthogonalization on ``v -> Phi H Phi^T v`` in ``R^D`` (only
D-dimensional Krylov vectors), RNEG, outliers, gradient-outlier alignment, evolution over
training and an accuracy study. The API lives in ``sketchcore_spectrum.api``; this module only
registers the analysis (and imports nothing heavy).
"""

from __future__ import annotations

import sketchcore


def add_cli(subparsers) -> None:
    """Add the ``sketchcore spectrum`` subcommand (handlers import their dependencies)."""
    from .cli import add_cli as _add

    _add(subparsers)


@sketchcore.hookimpl
def sketchcore_register_analyses(register):
    register(sketchcore.Analysis(
        name="spectrum",
        summary="Hessian eigenvalues (top/bottom, RNEG, outliers) by Lanczos on sketched HVPs",
        module="sketchcore_spectrum.api",
        add_cli=add_cli,
    ))
