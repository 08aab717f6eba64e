"""``sketchcore demo``: train a small model on bundled data and run all three analyses on it.

Registered as a command, not an analysis (entry point group ``sketchcore.commands``, hook
``sketchcore_register_commands``); it only uses the public APIs of the TDA, spectrum and
intrinsic-dimension plugins.
"""

from __future__ import annotations

import sketchcore

__all__ = ["sketchcore_register_commands", "add_cli"]


def add_cli(subparsers) -> None:
    from .cli import add_parser

    add_parser(subparsers)


@sketchcore.hookimpl
def sketchcore_register_commands(register):
    register(
        sketchcore.Command(
            name="demo",
            summary="train a small model on bundled data (digits) and run TDA, spectrum and "
            "intrinsic dimension on it; writes a report folder",
            add_cli=add_cli,
        )
    )
