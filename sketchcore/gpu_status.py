"""Whether this machine has a CUDA device, and whether the GPU check has passed on it.

The GPU paths (the cupy kernels, torch on CUDA, jax on GPU) are verified only by running
``benchmarks/gpu_check.sh`` on a machine with a GPU. That script records a passing run in a small
JSON file in the user's cache folder; ``sketchcore info`` reads it and, on a machine with a CUDA
device and no passing record for this version, says what is and is not verified.

Standard library only, and fast: the device is found by looking for the driver's files
(``/dev/nvidia0``..., ``/proc/driver/nvidia/gpus/*``), and only where neither exists by
``nvidia-smi -L`` with a short timeout (Windows Subsystem for Linux has no such files). No array
library is imported.

Overrides (for tests, and for machines laid out differently):

* ``SKETCHCORE_DEVICE_ROOT=<dir>``: look for ``<dir>/dev/nvidia*`` and
  ``<dir>/proc/driver/nvidia`` instead of the real ones, and never run ``nvidia-smi``.
* ``SKETCHCORE_CACHE_DIR=<dir>``: keep the record in ``<dir>/gpu-check.json`` instead of
  ``$XDG_CACHE_HOME/sketchcore/`` (default ``~/.cache/sketchcore/``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PATHS", "CudaDevice", "find_cuda", "record_path", "read_record", "write_record",
    "passing_record", "info_lines", "UNVERIFIED",
]

#: the GPU paths the check verifies, in the order they are reported
PATHS = ("cupy", "torch-cuda", "jax-gpu")

#: what is verified for each path without a GPU run (kept in step with docs/backends.md)
UNVERIFIED = {
    "cupy": "CUDA source compiles; launches emulated on the CPU; never run on a GPU",
    "torch-cuda": "never run on a GPU",
    "jax-gpu": "never run on a GPU",
}

RECORD_FORMAT = 1
_NVIDIA_SMI_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class CudaDevice:
    """A CUDA device found on this machine: how it was found and its name where known."""

    how: str
    name: str | None = None


def _root() -> tuple[Path, bool]:
    """(filesystem root to probe, whether nvidia-smi may be run)."""
    root = os.environ.get("SKETCHCORE_DEVICE_ROOT")
    return (Path(root), False) if root else (Path("/"), True)


def find_cuda() -> CudaDevice | None:
    """The CUDA device of this machine, or None (cheap: a directory listing, at most one
    ``nvidia-smi -L`` with a 2 s timeout)."""
    root, may_run = _root()
    name = _proc_name(root / "proc" / "driver" / "nvidia" / "gpus")
    try:
        nodes = sorted(p.name for p in (root / "dev").iterdir()
                       if re.fullmatch(r"nvidia\d+", p.name))
    except OSError:
        nodes = []
    if nodes:
        return CudaDevice(f"/dev/{nodes[0]}", name)
    if name is not None:
        return CudaDevice("/proc/driver/nvidia", name)
    if may_run and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=_NVIDIA_SMI_TIMEOUT_S).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        m = re.search(r"^GPU \d+: (.+?)(?: \(UUID: .*\))?$", out, re.MULTILINE)
        if m:
            return CudaDevice("nvidia-smi -L", m.group(1).strip())
    return None


def _proc_name(gpus: Path) -> str | None:
    """The model name in the first ``/proc/driver/nvidia/gpus/*/information`` (or "" when the
    folder lists a GPU whose file cannot be read), None when there is no GPU folder."""
    try:
        entries = sorted(gpus.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            text = (entry / "information").read_text(errors="replace")
        except OSError:
            return ""
        m = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
        return m.group(1).strip() if m else ""
    return None


def record_path() -> Path:
    """Where the GPU check's record lives."""
    explicit = os.environ.get("SKETCHCORE_CACHE_DIR")
    if explicit:
        return Path(explicit) / "gpu-check.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sketchcore" / "gpu-check.json"


def read_record() -> dict | None:
    """The recorded GPU check, or None (no file, or one that is not a record of this format)."""
    try:
        data = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        return None
    if not isinstance(data.get("paths"), dict):
        return None
    return data


def write_record(*, version: str, device: str, paths: dict[str, str], tests: str = "",
                 command: str = "", date: str | None = None) -> Path:
    """Record a GPU check (``paths``: path name -> "passed", "failed" or "skipped: reason").
    Written atomically; returns the file."""
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format": RECORD_FORMAT,
        "version": version,
        "date": date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device,
        "paths": dict(paths),
        "tests": tests,
        "command": command,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def passing_record(version: str) -> dict | None:
    """The record if it is for ``version`` and at least one GPU path passed in it."""
    rec = read_record()
    if rec is None or rec.get("version") != version:
        return None
    if not any(v == "passed" for v in rec["paths"].values()):
        return None
    return rec


def info_lines(version: str) -> list[str]:
    """The ``gpu`` section of ``sketchcore info``: empty without a CUDA device; otherwise the
    passing record for this version, or what is verified for each GPU path without one."""
    dev = find_cuda()
    if dev is None:
        return []
    where = f"CUDA device found ({dev.name or dev.how})"
    rec = passing_record(version)
    lines = [f"gpu: {where}"]
    if rec is None:
        lines.append(f"  the GPU check has not passed on this machine for sketchcore {version}; "
                     "what is verified without it:")
        lines += [f"    {p:<11} {UNVERIFIED[p]}" for p in PATHS]
        lines.append("  run `bash benchmarks/gpu_check.sh` (docs/gpu.md) to check them here")
        return lines
    lines.append(f"  GPU check of sketchcore {rec['version']} on {rec.get('device') or '?'}, "
                 f"{rec.get('date') or '?'}" + (f" ({rec['tests']})" if rec.get("tests") else ""))
    for p in PATHS:
        state = rec["paths"].get(p, "not run")
        lines.append(f"    {p:<11} {state if state == 'passed' else f'{state}; {UNVERIFIED[p]}'}")
    return lines
