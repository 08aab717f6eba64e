"""The Python API of training data attribution (TDA) with gradient sketches.

Build a store of per-example train gradient sketches, then score test examples against it::

    from sketchcore.gradients import GradientSketcher
    from sketchcore_tda.api import build_store, SketchStore, attribute

    gs = GradientSketcher(model, loss_fn, sketch=dict(algo="affd", out_dim=4096, seed=0))
    build_store("train.zarr", gs, (x_train, y_train))
    result = attribute(SketchStore.open("train.zarr"), gs, (x_test, y_test), k=10)
    print(result.format_table())

TRAK: sketch the gradients of a model output function (the margin) with out-to-loss weights,
one store per model of an ensemble, and average::

    from sketchcore_tda.api import TRAKSketcher, build_trak_store, attribute_checkpoints

    ts = TRAKSketcher(model, output="margin", sketch=dict(algo="affd", out_dim=2048, seed=0))
    build_trak_store("trak-0.zarr", ts, (x_train, y_train))
    result = attribute_checkpoints([(SketchStore.open("trak-0.zarr"), ts)], (x_test, y_test),
                                   method="trak")

``lds(task, ...)`` measures how well each method's scores predict models retrained on subsets.
"""

from .build import BuildSummary, build_store, sketcher_identity
from .evaluate import Evaluation, evaluate, evaluate_gradients, exact_gradients, layer_groups
from .lds import LDSResult, lds, linear_datamodeling_score
from .outputs import MARGIN, OutputFunction
from .query import (
    attribute,
    attribute_checkpoints,
    check_sketcher,
    score_checkpoints,
    sketch_data,
    sketch_spec,
)
from .scores import (
    METHODS,
    Attribution,
    Checkpoint,
    Preconditioner,
    score_matrix,
    self_influence,
    soft_threshold,
    top_k,
)
from .store import SketchStore
from .task_spec import TDATask, load_task, make_sketcher
from .trak import TRAKSketcher, build_trak_store, trak_sketcher, write_out_to_loss

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
    "evaluate_gradients",
    "Evaluation",
    "exact_gradients",
    "layer_groups",
    "TDATask",
    "load_task",
    "make_sketcher",
    "soft_threshold",
    "score_checkpoints",
    "OutputFunction",
    "MARGIN",
    "TRAKSketcher",
    "trak_sketcher",
    "build_trak_store",
    "write_out_to_loss",
    "lds",
    "LDSResult",
    "linear_datamodeling_score",
]
