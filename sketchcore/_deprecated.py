"""The warnings that renamed modules and names give when used by their old name (kept one
release, then removed)."""

from __future__ import annotations

import warnings

__all__ = ["warn_renamed", "warn_renamed_name", "renamed_method"]


def warn_renamed(old: str, new: str) -> None:
    """Warn that module ``old`` is now ``new``: call it at the top level of the alias module."""
    warnings.warn(
        f"module {old} is renamed {new}; import from {new} instead ({old} is removed in the next "
        "release).", DeprecationWarning, stacklevel=3)


def warn_renamed_name(old: str, new: str, stacklevel: int = 3, hint: str = "") -> None:
    """Warn that the name ``old`` (an attribute, method or argument value) is now ``new``.

    Every such message starts with ``sketchcore renamed``, which the test configuration turns
    into an error, so code in this repository cannot keep using an old name by accident.
    ``stacklevel`` counts from the caller of this function (3: the caller's caller)."""
    warnings.warn(
        f"sketchcore renamed {old} to {new}; use {new}{hint} ({old} is removed in the next "
        "release).", DeprecationWarning, stacklevel=stacklevel)


def renamed_method(owner: str, old: str, new: str):
    """A method ``old`` that warns and calls ``self.<new>``: put it in the class body as
    ``old = renamed_method("Class", "old", "new")``."""

    def method(self, *args, **kwargs):
        warn_renamed_name(f"{owner}.{old}", f"{owner}.{new}")
        return getattr(self, new)(*args, **kwargs)

    method.__name__ = method.__qualname__ = old
    method.__doc__ = f"Deprecated name of ``{new}`` (removed in the next release)."
    return method
