"""Deprecated alias of ``sketchcore.array_namespace`` (renamed: it says what the module holds)."""

from __future__ import annotations

from ._deprecated import warn_renamed
from .array_namespace import default_float, device_of, from_host, namespace_of

__all__ = ["namespace_of", "device_of", "from_host", "default_float", "is_traced"]

warn_renamed(__name__, "sketchcore.array_namespace")


def is_traced(x) -> bool:
    """Deprecated: ask the backend owning ``x``, ``Backend.is_traced(x)``."""
    from .registry import registry

    return registry().backend_for(x).is_traced(x)
