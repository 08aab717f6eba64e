"""The warning a renamed module's old name gives on import (kept one release, then removed)."""

from __future__ import annotations

import warnings

__all__ = ["warn_renamed"]


def warn_renamed(old: str, new: str) -> None:
    """Warn that module ``old`` is now ``new``: call it at the top level of the alias module."""
    warnings.warn(
        f"module {old} is renamed {new}; import from {new} instead ({old} is removed in the next "
        "release).", DeprecationWarning, stacklevel=3)
