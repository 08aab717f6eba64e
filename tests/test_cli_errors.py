"""The ``sketchcore`` command reports expected errors in one line, ``sketchcore: error: ...``, on
stderr with a non-zero exit status and no traceback; ``--debug`` (or ``SKETCHCORE_DEBUG=1``)
shows the traceback. Called from Python with an argument list, ``main`` lets exceptions through.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = '''
"""An analysis whose subcommands raise what the tests ask for."""
import sketchcore


def _sketch(args):
    import numpy as np

    sketchcore.sketch(np.ones((2, 64)), algo=args.algo, out_dim=8, seed=0)
    return 0


def _raise(args):
    kind = args.kind
    if kind == "runtime":
        raise RuntimeError("the probe failed unexpectedly")
    if kind == "keyboard":
        raise KeyboardInterrupt
    if kind == "exit-message":
        raise SystemExit("--weight expects as many values as --store")
    if kind == "exit-code":
        raise SystemExit(3)
    if kind == "long":
        raise ValueError("v" * 10_000)
    if kind == "multiline":
        raise sketchcore.StoreMismatchError(
            "the store was built with another sketch:\\n  out_dim: store has 256, requested 128"
            "\\n  seed: store has 0, requested 1")
    if kind == "type":
        raise TypeError("out_dim must be an int, got 'many'")
    if kind == "key":
        raise KeyError("labels")
    if kind == "import":
        import sketchcore_no_such_module  # noqa: F401
    raise AssertionError(kind)


def add_cli(subparsers):
    p = subparsers.add_parser("probe")
    sub = p.add_subparsers(dest="probe_command")
    s = sub.add_parser("sketch")
    s.add_argument("--algo", required=True)
    s.set_defaults(func=_sketch)
    r = sub.add_parser("raise")
    r.add_argument("kind")
    r.set_defaults(func=_raise)


@sketchcore.hookimpl
def sketchcore_register_analyses(register):
    register(sketchcore.Analysis(name="probe", summary="raises on request",
                                 module="sketchcore_test_probe", add_cli=add_cli))
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder with the probe analysis installed as a distribution with one entry point."""
    site = tmp_path_factory.mktemp("cli-errors") / "site"
    dist = site / "sketchcore_test_probe-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sketchcore-test-probe\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[sketchcore.analyses]\nprobe = sketchcore_test_probe\n")
    (site / "sketchcore_test_probe.py").write_text(PROBE)
    return site


def sketchcore(site, *args, debug_env=False):
    # site first, then whatever PYTHONPATH already held (e.g. the tree under test)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("SKETCHCORE_DISABLE_PLUGINS", None)
    env.pop("SKETCHCORE_DEBUG", None)
    if debug_env:
        env["SKETCHCORE_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-m", "sketchcore.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=site.parent)


def one_error_line(proc):
    """The single ``sketchcore: error: ...`` line on stderr (nothing else there)."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sketchcore: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["info", "scores"])
def test_missing_store_is_one_line(site, tmp_path, command):
    pytest.importorskip("zarr")
    missing = tmp_path / "no-such-store"
    proc = sketchcore(site, "tda", command, "--store", str(missing))
    assert proc.returncode == 1, proc.stderr
    assert str(missing) in one_error_line(proc)


def test_debug_flag_and_env_show_the_traceback(site, tmp_path):
    missing = str(tmp_path / "no-such-store")
    for proc in (sketchcore(site, "--debug", "tda", "info", "--store", missing),
                 sketchcore(site, "tda", "info", "--store", missing, debug_env=True)):
        assert proc.returncode == 1, proc.stderr
        assert "Traceback (most recent call last)" in proc.stderr, proc.stderr
        assert missing in proc.stderr


def test_debug_flag_is_accepted_before_any_subcommand(site):
    proc = sketchcore(site, "--debug", "info")
    assert proc.returncode == 0, proc.stderr
    assert "algorithms:" in proc.stdout


def test_unknown_algorithm_is_a_usage_error(site):
    proc = sketchcore(site, "probe", "sketch", "--algo", "nope")
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert "unknown algorithm 'nope'" in line and "'affd'" in line, line


def test_unknown_subcommand_is_argparses_usage_error(site):
    proc = sketchcore(site, "no-such-command")
    assert proc.returncode == 2
    assert "sketchcore: error: argument COMMAND: invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind, status, text", [
    ("type", 2, "sketchcore: error: out_dim must be an int, got 'many'"),
    ("exit-message", 2, "sketchcore: error: --weight expects as many values as --store"),
    ("key", 1, "sketchcore: error: KeyError: 'labels'"),
    ("import", 1, "sketchcore: error: No module named 'sketchcore_no_such_module'"),
])
def test_expected_errors(site, kind, status, text):
    proc = sketchcore(site, "probe", "raise", kind)
    assert proc.returncode == status, proc.stderr
    assert one_error_line(proc) == text


def test_detail_lines_of_a_message_are_indented(site):
    proc = sketchcore(site, "probe", "raise", "multiline")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "sketchcore: error: the store was built with another sketch:",
        "  out_dim: store has 256, requested 128",
        "  seed: store has 0, requested 1",
    ]


def test_long_messages_are_capped(site):
    proc = sketchcore(site, "probe", "raise", "long")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert len(line) <= 2100, len(line)
    assert line.endswith("more characters)"), line[-80:]


def test_unexpected_error_is_one_line_and_a_hint(site):
    proc = sketchcore(site, "probe", "raise", "runtime")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "sketchcore: error: RuntimeError: the probe failed unexpectedly",
        "sketchcore: an unexpected error; run again with --debug (or SKETCHCORE_DEBUG=1) for "
        "the traceback",
    ]
    debug = sketchcore(site, "--debug", "probe", "raise", "runtime")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_interrupt_exits_130(site):
    proc = sketchcore(site, "probe", "raise", "keyboard")
    assert proc.returncode == 130
    assert proc.stderr.splitlines() == ["sketchcore: interrupted"]


def test_exit_with_a_status_passes_through(site):
    proc = sketchcore(site, "probe", "raise", "exit-code")
    assert proc.returncode == 3 and proc.stderr == ""


def test_main_called_from_python_raises_unless_asked_to_report(tmp_path, capsys):
    pytest.importorskip("zarr")
    import sketchcore as sk
    from sketchcore.cli import main

    missing = str(tmp_path / "missing")
    with pytest.raises((OSError, sk.SketchcoreError)):
        main(["tda", "info", "--store", missing])
    assert main(["tda", "info", "--store", missing], report_errors=True) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("sketchcore: error: ") and missing in err[0]
