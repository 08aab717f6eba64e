"""The built-in sketches, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .affd import AFFD, AFJL
from .base import SketchAlgorithm
from .dense import Dense
from .ffd import FFD
from .fjl import FJL
from .qk import QK
from .sjlt import SJLT
from .srht import SRHT

__all__ = [
    "SketchAlgorithm", "Dense", "FJL", "FFD", "AFFD", "AFJL", "QK", "SJLT", "SRHT", "BUILTIN",
]

BUILTIN = (Dense, FJL, FFD, AFFD, AFJL, QK, SJLT, SRHT)


@hookimpl
def sketchcore_register_algorithms(register):
    for cls in BUILTIN:
        register(cls)
