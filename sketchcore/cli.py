"""The ``sketchcore`` command: ``info`` and ``quality`` here; analysis plugins add their own
subcommands.

``sketchcore info`` lists algorithms, backends and analyses without importing any array library
(a backend whose library is missing is reported from ``importlib.util.find_spec``); ``sketchcore
info --check`` imports each backend and runs its ``check()``. ``sketchcore quality FILE.npy``
measures what each sketch size buys on the user's vectors (``sketchcore.quality``).

Errors on the command line (``sketchcore ...`` or ``python -m sketchcore.cli ...``):

* An expected error prints one line, ``sketchcore: error: <message>``, on stderr (a message of
  several lines, such as a store mismatch listing the fields that differ, continues on indented
  detail lines) and no traceback. Expected are ``SketchcoreError`` and its subclasses, ``OSError``
  (a missing store, a folder that exists, no permission, ...), ``ValueError``, ``ImportError``,
  ``KeyError`` and ``TypeError``. The exit status is 2 for a bad argument (an unknown name,
  ``InvalidOptionError``, a ``TypeError`` from argument validation, a ``SystemExit("message")``
  raised by a subcommand for a usage error, and argparse's own usage errors) and 1 otherwise.
* Any other exception is unexpected (most likely a bug): the same one line, naming the exception
  type, then a hint to rerun with ``--debug``; exit status 1.
* Ctrl-C prints ``sketchcore: interrupted`` and exits with 130.
* ``sketchcore --debug <command> ...`` (the flag goes before the subcommand) or
  ``SKETCHCORE_DEBUG=1`` lets every exception through, with its traceback.

No line of a message is longer than about 2000 characters, and at most 20 detail lines are kept.
``main(argv)`` called from Python with an argument list lets exceptions through unless
``report_errors=True``.

An analysis or command (``sketchcore.Command``, e.g. ``demo``) whose ``add_cli`` raises loses its
subcommand (whatever it had half built is taken
out again); the rest of the command works, and ``sketchcore info`` shows the reason.
"""

from __future__ import annotations

import argparse
import os
import sys

from ._errors import InvalidOptionError, SketchcoreError, UnknownNameError

__all__ = ["main", "build_parser"]

#: exceptions reported as one line without the hint that it may be a bug
EXPECTED = (SketchcoreError, OSError, ValueError, ImportError, KeyError, TypeError)
#: expected exceptions that mean a bad argument: exit status 2 (others: 1)
USAGE = (UnknownNameError, InvalidOptionError, TypeError)
MAX_LINE = 2000
MAX_DETAIL_LINES = 20
PROG = "sketchcore"
BACKENDS, ANALYSES, COMMANDS = "sketchcore.backends", "sketchcore.analyses", "sketchcore.commands"


def _info(args) -> int:
    from . import __version__
    from .api import algorithms, analyses
    from .registry import registry

    reg = registry()
    print(f"sketchcore {__version__}")
    print("\nalgorithms:")
    for name in algorithms():
        print(f"  {name:<8} {reg.algorithms[name].summary}")
    check = bool(getattr(args, "check", False))
    print("\nbackends:" if check else
          "\nbackends (found; `sketchcore info --check` imports and tests each one):")
    for b in reg.info(check=check):
        if b.usable is None:
            state = "found; not checked whether usable"
        elif b.usable:
            state = "usable"
        else:
            state = f"not usable: {b.reason}{_from(b.source, b.name)}"
        print(f"  {b.name:<8} priority {b.priority:<3} {state}")
    cli_faulty = set()
    sections = (("analyses", analyses(), lambda group: group not in (BACKENDS, COMMANDS)),
                ("commands", reg.commands, lambda group: group == COMMANDS))
    for title, table, holds in sections:
        print(f"\n{title}:")
        for name, entry in table.items():
            fault = reg.cli_errors.get(name)
            if fault is None:
                print(f"  {name:<14} {entry.summary}")
            else:
                plugin = reg.sources.get(name, name)
                cli_faulty.add(plugin)
                print(f"  {name:<14} no command-line subcommand: {fault}{_from(plugin, name)}")
        for name, err in sorted(reg.errors.items()):
            if holds(reg.error_group.get(name)) and name not in cli_faulty:
                print(f"  {name:<14} not usable: plugin failed to load: {err}")
    from .gpu_status import info_lines

    gpu = info_lines(__version__)  # empty without a CUDA device; never imports an array library
    if gpu:
        print("\n" + "\n".join(gpu))
    return 0


def _int_list(text: str) -> list[int]:
    """``"64,256,1024"`` -> [64, 256, 1024] (an argparse type)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 64,256,1024, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _add_quality(sub) -> None:
    p = sub.add_parser(
        "quality", help="measure what each sketch size D buys on your own vectors (a .npy file)",
        description="Sketch the rows of FILE at several D and print the distortion of norms and "
                    "pairwise inner products and the Pearson r against exact inner products; "
                    "recommend the smallest D within --target, beside scikit-learn's "
                    "johnson_lindenstrauss_min_dim.")
    p.add_argument("file", metavar="FILE.npy", help="an array of shape (n, N): n vectors")
    p.add_argument("--algo", default="affd",
                   help="algorithm(s), comma-separated (default affd; see `sketchcore info`)")
    p.add_argument("--out-dims", type=_int_list, default=None, metavar="D,D,...",
                   help="sketch sizes to try (default: powers of two from 16 to N or 2^14)")
    p.add_argument("--target", type=float, default=0.1,
                   help="largest relative distortion accepted (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-vectors", type=int, default=1000,
                   help="use the first rows only (the exact Gram matrix costs n^2 N; default "
                        "1000)")
    p.add_argument("--backend", default=None, help="backend name (default: the best for numpy)")
    p.add_argument("--plot", default=None, metavar="PNG", help="also draw the curves (matplotlib)")
    p.set_defaults(func=_quality)


def _quality(args) -> int:
    import numpy as np

    from .quality import quality

    x = np.load(args.file, allow_pickle=False, mmap_mode="r")
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{args.file}: expected a .npy file holding one array (np.save), "
                         "not an archive of several.")
    algos = [a.strip() for a in args.algo.split(",") if a.strip()]
    report = quality(x, algo=algos, out_dims=args.out_dims, target=args.target, seed=args.seed,
                     backend=args.backend, max_vectors=args.max_vectors)
    print(report.format_table())
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


def _from(plugin: str, name: str) -> str:
    """`` (plugin 'x')`` when something is registered under a name other than its plugin's."""
    return "" if plugin == name else f" (plugin {plugin!r})"


def _add_cli(sub, entry) -> str | None:
    """Run ``entry.add_cli(sub)`` (an analysis or a command); if it raises, take out whatever it
    added to ``sub`` and return the reason (else None)."""
    from .registry import describe

    choices = dict(sub.choices)  # argparse's name -> parser map (the same dict object)
    listed = list(getattr(sub, "_choices_actions", []))  # the entries of ``--help``
    try:
        entry.add_cli(sub)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: BLE001 - a broken plugin must not break the command
        sub.choices.clear()
        sub.choices.update(choices)
        if hasattr(sub, "_choices_actions"):
            sub._choices_actions[:] = listed
        return describe(err, "add_cli()")
    return None


def build_parser() -> argparse.ArgumentParser:
    from .api import analyses
    from .registry import registry

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Structured random sketches of gradients and HVPs, and analyses built on them.",
    )
    parser.add_argument(
        "--debug", action="store_true",
        help="on an error, show the full traceback instead of one line (also SKETCHCORE_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="list algorithms, backends and analyses (fast: imports no "
                                    "array library; --check tests each backend)")
    p.add_argument("--check", action="store_true",
                   help="import each backend's library and test whether it can run here")
    p.set_defaults(func=_info)
    _add_quality(sub)
    reg = registry()
    for group, table in ((ANALYSES, analyses()), (COMMANDS, reg.commands)):
        for name, entry in table.items():
            if entry.add_cli is None:
                continue
            fault = _add_cli(sub, entry)
            if fault is None:
                reg.cli_errors.pop(name, None)
            else:
                reg.cli_errors[name] = fault
                plugin = reg.sources.get(name, name)
                reg.errors.setdefault(plugin, fault)
                reg.error_group.setdefault(plugin, group)
    return parser


def _run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


def _debug_requested(argv: list[str]) -> bool:
    """``--debug`` among the options before the subcommand, or SKETCHCORE_DEBUG set (not 0)."""
    if os.environ.get("SKETCHCORE_DEBUG", "").strip().lower() not in ("", "0", "false", "no"):
        return True
    for arg in argv:
        if arg == "--debug":
            return True
        if not arg.startswith("-") or arg == "--":
            return False
    return False


def _cap(line: str) -> str:
    if len(line) <= MAX_LINE:
        return line
    return f"{line[:MAX_LINE]}... ({len(line) - MAX_LINE} more characters)"


def _format(err: BaseException, expected: bool) -> list[str]:
    """The lines that report ``err``: the first after ``sketchcore: error:``, then details."""
    text = str(err)
    if not expected or (isinstance(err, KeyError) and not isinstance(err, SketchcoreError)):
        # a bare KeyError reads "'name'", and an unexpected error needs its type to be searched
        text = f"{type(err).__name__}: {text}" if text else ""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()] or [type(err).__name__]
    first, details = lines[0], lines[1:]
    out = [_cap(f"{PROG}: error: {first.strip()}")]
    for ln in details[:MAX_DETAIL_LINES]:
        out.append(_cap(ln if ln[:1].isspace() else "  " + ln))
    if len(details) > MAX_DETAIL_LINES:
        out.append(f"  ... ({len(details) - MAX_DETAIL_LINES} more lines)")
    return out


def _say(lines: list[str]) -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    print("\n".join(lines), file=sys.stderr)


def _quiet_stdout() -> None:
    """After a broken pipe (``sketchcore info | head``) send what is left of stdout nowhere, so
    that the interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv=None, *, report_errors: bool | None = None) -> int:
    """Run the ``sketchcore`` command with ``argv`` (default: ``sys.argv[1:]``) and return its
    exit status. ``report_errors`` (default: only when ``argv`` is None, i.e. on the command
    line) turns exceptions into the one-line reports described in this module's docstring."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if report_errors is None:
        report_errors = argv is None
    if not report_errors:
        return _run(args)
    debug = _debug_requested(args)
    try:
        return _run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        _say([f"{PROG}: interrupted"])
        return 130
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise  # argparse (--help, usage errors) and sys.exit(status) keep their status
        # a subcommand's ``raise SystemExit("message")``: a usage error, reported like argparse's
        if debug:
            import traceback

            traceback.print_exc()
        _say(_format(ValueError(exc.code), expected=True))
        return 2
    except BrokenPipeError:
        if debug:
            raise
        _quiet_stdout()
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into messages
        if debug:
            raise
        expected = isinstance(exc, EXPECTED)
        lines = _format(exc, expected)
        if not expected:
            lines.append(f"{PROG}: an unexpected error; run again with --debug "
                         "(or SKETCHCORE_DEBUG=1) for the traceback")
        _say(lines)
        return 2 if isinstance(exc, USAGE) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
