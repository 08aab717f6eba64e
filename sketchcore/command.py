"""``Command``: a ``sketchcore`` subcommand that is not an analysis (e.g. ``sketchcore demo``).

An analysis (``Analysis``) adds a Python API and its command; a command only adds the command,
so ``sketchcore.analyses()`` lists analyses and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Command"]


@dataclass(frozen=True)
class Command:
    """One command: ``add_cli`` gets the ``argparse`` subparsers object and adds the subcommand
    ``name``, whose handler imports what it needs."""

    name: str
    summary: str
    add_cli: Callable = field(compare=False)
