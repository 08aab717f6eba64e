"""sketchcore_tda: training data attribution with gradient sketches.

Registers the analysis ``tda``: its Python API is ``sketchcore_tda.api`` and its command is
``sketchcore tda {build,scores,evaluate,info,verify,lds}``. Importing this package imports nothing heavy
(no torch, zarr or ray); those load when a command or API function runs.
"""

import sketchcore

from .cli import add_cli

__all__ = ["add_cli", "sketchcore_register_analyses"]


@sketchcore.hookimpl
def sketchcore_register_analyses(register):
    register(sketchcore.Analysis(
        name="tda",
        summary="training data attribution: per-example gradient sketch store, TracIn/TRAK "
                "scores, evaluation against exact inner products",
        module="sketchcore_tda.api",
        add_cli=add_cli,
    ))
