"""``Analysis``: what an analysis plugin registers (a name, a summary, its API, its CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Analysis"]


@dataclass(frozen=True)
class Analysis:
    """One analysis plugin.

    ``module`` is the import path of its Python API (imported only when used); ``add_cli`` gets
    the ``argparse`` subparsers object and adds one subcommand whose handler imports what it needs.
    """

    name: str
    summary: str
    module: str
    add_cli: Callable | None = field(default=None, compare=False)

    def load(self):
        """Import and return the analysis's API module."""
        import importlib

        return importlib.import_module(self.module)
