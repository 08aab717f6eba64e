"""Intrinsic dimension of a model's training: the smallest D for which training only omega in
``theta = theta0 + Phi^T omega`` (Phi a sketch of the core) reaches a target metric.

The API lives in ``sketchcore_intrinsic_dim.api`` (imported on use); this module only registers
the analysis and its ``sketchcore intrinsic-dim`` subcommand, so importing it stays fast.
"""

import sketchcore


def add_cli(subparsers):
    """Add ``sketchcore intrinsic-dim`` (its handler imports torch/jax only when it runs)."""
    from .cli import add_cli as _add

    _add(subparsers)


@sketchcore.hookimpl
def sketchcore_register_analyses(register):
    register(sketchcore.Analysis(
        name="intrinsic_dim",
        summary="intrinsic dimension D* by a one-run nested-subspace search (theta0 + Phi^T omega)",
        module="sketchcore_intrinsic_dim.api",
        add_cli=add_cli,
    ))
