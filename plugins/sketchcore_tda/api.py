"""The Python API of training data attribution (TDA) with gradient sketches.

Build a store of per-example train gradient sketches, then score test examples against it::

    from sketchcore.gradients import GradientSketcher
    from sketchcore_tda.api import build_store, SketchStore, attribute

    gs = GradientSketcher(model, loss_fn, sketch=dict(algo="affd", out_dim=4096, seed=0))
    build_store("train.zarr", gs, (x_train, y_train))
    result = attribute(SketchStore.open("train.zarr"), gs, (x_test, y_test), k=10)
    print(result.format_table())
"""

from .build import BuildSummary, build_store, sketcher_identity
from .evaluate import Evaluation, evaluate, exact_gradients, layer_groups
from .query import attribute, attribute_checkpoints, check_sketcher, sketch_data, sketch_spec
from .scores import (
    METHODS,
    Attribution,
    Checkpoint,
    Preconditioner,
    score_matrix,
    self_influence,
    top_k,
)
from .store import SketchStore
from .task import TDATask, load_task, make_sketcher

__all__ = [
    "build_store",
    "BuildSummary",
    "sketcher_identity",
    "SketchStore",
    "score_matrix",
    "self_influence",
    "top_k",
    "Attribution",
    "Checkpoint",
    "Preconditioner",
    "METHODS",
    "attribute",
    "attribute_checkpoints",
    "check_sketcher",
    "sketch_data",
    "sketch_spec",
    "evaluate",
    "Evaluation",
    "exact_gradients",
    "layer_groups",
    "TDATask",
    "load_task",
    "make_sketcher",
]
