"""The built-in sketches, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .affd import AFFD, AFJL
from .base import SketchAlgorithm
from .dense import Dense
from .ffd import FFD
from .fjl import FJL
from .qk import QK

__all__ = ["SketchAlgorithm", "Dense", "FJL", "FFD", "AFFD", "AFJL", "QK", "BUILTIN"]

BUILTIN = (Dense, FJL, FFD, AFFD, AFJL, QK)


@hookimpl
def sketchcore_register_algorithms(register):
    for cls in BUILTIN:
        register(cls)
