"""The pluggy hook specifications of sketchcore (project name ``sketchcore``).

A plugin is a module (or instance) exposed through an entry point in the group
``sketchcore.backends``, ``sketchcore.algorithms``, ``sketchcore.analyses`` or
``sketchcore.commands`` that implements any of these hooks. Hooks run
once, when sketchcore first needs its registry (the cold path); they fill plain dictionaries that
the hot path reads. Plugin modules must import quickly: no torch, jax, cupy or numba at module
level (import them inside ``Backend.namespace()`` or a kernel).
"""

from __future__ import annotations

import pluggy

__all__ = ["hookspec", "hookimpl", "PROJECT"]

PROJECT = "sketchcore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def sketchcore_register_backends(register):
    """Register ``sketchcore.Backend`` instances: call ``register(backend)`` for each.

    Called once. The name ``backend.name`` must be unique; the backend must not import its array
    library until ``namespace()``, ``check()`` or a kernel runs.
    """


@hookspec
def sketchcore_register_algorithms(register):
    """Register ``SketchAlgorithm`` subclasses: call ``register(cls)``; ``cls.name`` is unique."""


@hookspec
def sketchcore_register_analyses(register):
    """Register ``sketchcore.Analysis`` records: call ``register(analysis)`` for each.

    An analysis adds a Python API (its module) and a CLI subcommand (``add_cli(subparsers)``).
    """


@hookspec
def sketchcore_register_commands(register):
    """Register ``sketchcore.Command`` records: a CLI subcommand that is not an analysis (no
    Python API of its own, not listed by ``sketchcore.analyses()``), e.g. ``sketchcore demo``."""
