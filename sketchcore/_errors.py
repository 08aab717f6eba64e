"""The exception hierarchy: every error names the bad value, the allowed values and the fix."""

from __future__ import annotations

__all__ = [
    "SketchcoreError",
    "UnknownNameError",
    "InvalidOptionError",
    "ShapeError",
    "BackendUnavailableError",
    "StoreMismatchError",
]


class SketchcoreError(Exception):
    """Base class of all sketchcore errors."""


class UnknownNameError(SketchcoreError, KeyError):
    """An algorithm, backend, analysis or option name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class InvalidOptionError(SketchcoreError, ValueError):
    """A size, seed or option value outside its allowed range."""


class ShapeError(SketchcoreError, ValueError):
    """An input whose shape does not fit the operator."""


class BackendUnavailableError(SketchcoreError, RuntimeError):
    """A backend that is registered but cannot run here (library missing, no device)."""


class StoreMismatchError(SketchcoreError, ValueError):
    """A sketch store opened or queried with a different sketch or model."""


def unknown(kind: str, name: object, allowed, hint: str = "") -> UnknownNameError:
    """Build the standard 'unknown X' error listing what is allowed."""
    names = ", ".join(repr(a) for a in sorted(allowed))
    msg = f"unknown {kind} {name!r}; allowed: {names}."
    if hint:
        msg += " " + hint
    return UnknownNameError(msg)
