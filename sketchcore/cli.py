"""The ``sketchcore`` command: ``info`` here; analysis plugins add their own subcommands."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def _info(args) -> int:
    from . import __version__
    from .api import algorithms, analyses, backends
    from .registry import registry

    reg = registry()
    print(f"sketchcore {__version__}")
    print("\nalgorithms:")
    for name in algorithms():
        print(f"  {name:<8} {reg.algorithms[name].summary}")
    print("\nbackends:")
    for b in backends():
        state = "usable" if b.usable else f"not usable: {b.reason}"
        print(f"  {b.name:<8} priority {b.priority:<3} {state}")
    print("\nanalyses:")
    for name, a in analyses().items():
        print(f"  {name:<14} {a.summary}")
    for name, err in sorted(reg.errors.items()):
        if reg.error_group.get(name) != "sketchcore.backends":
            print(f"  {name:<14} not usable: plugin failed to load: {err}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .api import analyses

    parser = argparse.ArgumentParser(
        prog="sketchcore",
        description="Structured random sketches of gradients and HVPs, and analyses built on them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="list algorithms, backends (usable or why not), analyses")
    p.set_defaults(func=_info)
    for analysis in analyses().values():
        if analysis.add_cli is not None:
            analysis.add_cli(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
