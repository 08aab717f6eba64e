"""The exception hierarchy: every error names the bad value, the allowed values and the fix."""

from __future__ import annotations

import reprlib

__all__ = [
    "SketchcoreError",
    "UnknownNameError",
    "InvalidOptionError",
    "ShapeError",
    "BackendUnavailableError",
    "StoreMismatchError",
    "describe_value",
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


def describe_value(value: object, limit: int = 200) -> str:
    """A short description of a user's value for an error message: arrays (anything with a
    ``shape`` and a ``dtype``) by type, shape and dtype, other values by their ``repr`` cut to
    ``limit`` characters, so that a message never embeds a huge input."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None and not isinstance(value, type) and shape != ():
        kind = f"{type(value).__module__.split('.')[0]}.{type(value).__qualname__}"
        try:
            dims = tuple(shape)
        except TypeError:  # an unknown (traced) shape
            dims = shape
        return f"<{kind} of shape {dims} and dtype {dtype}>"
    if isinstance(value, int) and value.bit_length() > 256:
        return f"<{type(value).__qualname__} of {value.bit_length()} bits>"
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = 12
    try:
        text = short.repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        text = f"<{type(value).__qualname__} object>"
    if len(text) > limit:
        text = f"{text[: max(0, limit - 40)]}... <{type(value).__qualname__}, {len(text)} chars>"
    return text


def unknown(kind: str, name: object, allowed, hint: str = "") -> UnknownNameError:
    """Build the standard 'unknown X' error listing what is allowed."""
    names = ", ".join(repr(a) for a in sorted(allowed))
    msg = f"unknown {kind} {describe_value(name)}; allowed: {names}."
    if hint:
        msg += " " + hint
    return UnknownNameError(msg)
