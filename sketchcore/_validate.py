"""Validation of the arguments every entry point shares: sizes and algorithm names.

Its own module so that ``api`` (which builds sketches) and ``auto_dim`` (which sizes them) both
use it without importing each other.
"""

from __future__ import annotations

import operator

from ._errors import InvalidOptionError, UnknownNameError, describe_value
from .registry import registry

__all__ = ["check_size", "check_algo"]


def check_size(name: str, value) -> int:
    """A validated size: a Python or numpy integer >= 1 (not a bool, not a float, even 8.0)."""
    if isinstance(value, bool) or value is None:
        raise InvalidOptionError(
            f"{name} must be a positive integer, got {value!r}; pass e.g. {name}=1024.")
    try:
        v = operator.index(value)
    except TypeError:
        whole = isinstance(value, float) and value.is_integer() and value >= 1
        raise InvalidOptionError(
            f"{name} must be a positive integer, got {describe_value(value)} "
            f"({type(value).__name__}); pass e.g. {name}={int(value) if whole else 1024}."
        ) from None
    if v < 1:
        raise InvalidOptionError(f"{name} must be >= 1, got {describe_value(v)}.")
    return v


def check_algo(algo) -> str:
    """A validated algorithm name (any value, hashable or not, gets the same clear error)."""
    table = registry().algorithms
    if isinstance(algo, str) and algo in table:
        return algo
    what = repr(algo) if isinstance(algo, str) and len(algo) <= 200 else (
        f"{describe_value(algo)} ({type(algo).__name__})")
    names = ", ".join(repr(a) for a in sorted(table))
    raise UnknownNameError(
        f"unknown algorithm {what}; algo must be one of: {names}. See sketchcore.algorithms().")
