"""sketchcore: structured random sketches of gradients and Hessian-vector products.

``sketch``/``Sketch`` apply seeded linear maps ``R^N -> R^D`` (dense, fjl, ffd, affd, afjl, qk,
sjlt, srht) written once against the array API; ``quality`` measures what a sketch size D buys on
your vectors; backends (numpy, numba, torch, jax, cupy) and analyses (TDA,
Hessian spectra, intrinsic dimension) are plugins found through entry points.
"""

from ._errors import (
    BackendUnavailableError,
    InvalidOptionError,
    ShapeError,
    SketchcoreError,
    StoreMismatchError,
    UnknownNameError,
)
from . import quality
from .analysis import Analysis
from .command import Command
from .api import Sketch, algorithms, analyses, backends, resolve_backend, sketch
from .backend import Backend
from .hookspecs import hookimpl
from .quality import auto_out_dim
from .sketches.base import SketchAlgorithm
from .kron_plans import KronPlan

__version__ = "0.1.0"

__all__ = [
    "Sketch",
    "sketch",
    "algorithms",
    "backends",
    "analyses",
    "resolve_backend",
    "quality",
    "auto_out_dim",
    "Backend",
    "SketchAlgorithm",
    "Analysis",
    "Command",
    "KronPlan",
    "hookimpl",
    "SketchcoreError",
    "UnknownNameError",
    "InvalidOptionError",
    "ShapeError",
    "BackendUnavailableError",
    "StoreMismatchError",
    "__version__",
]
