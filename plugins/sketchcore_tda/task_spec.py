"""``TDATask``: what the CLI needs to know about a user's model and data, and how to load one.

A task is a function ``make_task(**args) -> TDATask`` named on the command line as
``package.module:function`` or ``path/to/file.py:function``; ``--task-arg key=value`` passes
arguments (values parsed as Python literals when they are, else kept as strings).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

__all__ = ["TDATask", "load_task", "parse_task_args", "make_sketcher"]


@dataclass
class TDATask:
    """A model with its loss and its train/test data.

    ``loss_fn(output, batch)`` returns the MEAN loss of a batch (``GradientSketcher``'s
    convention); ``train``/``test`` are arrays (tuple/list/dict of numpy or torch arrays) or
    iterables of batches; ``params`` selects parameters by name pattern (None: all trainable);
    ``forward(model_call, batch)`` overrides how a batch is fed to the model.
    """

    model: object
    loss_fn: object
    train: object
    test: object
    train_ids: object = None
    test_ids: object = None
    forward: object = None
    params: list | None = None
    name: str = ""
    info: dict = field(default_factory=dict)


def parse_task_args(pairs) -> dict:
    """``["epochs=3", "name=x"]`` -> ``{"epochs": 3, "name": "x"}``."""
    out = {}
    for item in pairs or []:
        if "=" not in item:
            raise ValueError(f"--task-arg needs key=value, got {item!r}.")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def _import_callable(spec: str):
    import importlib
    import importlib.util
    from pathlib import Path

    if ":" not in spec:
        raise ValueError(f"a task is named 'module:function' or 'file.py:function', got {spec!r} "
                         "(e.g. sketchcore_tda.example_tasks:digits).")
    target, name = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"task file {target!r} does not exist.")
        mod_name = "sketchcore_tda_task_" + path.stem
        spec_ = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{target!r} has no function {name!r}.")
    return fn


def load_task(spec: str, args: dict | None = None) -> TDATask:
    """Call the task function named by ``spec`` with ``args``; it must return a ``TDATask``."""
    task = _import_callable(spec)(**(args or {}))
    if not isinstance(task, TDATask):
        raise TypeError(f"task {spec!r} returned {type(task).__name__}; it must return a "
                        "sketchcore_tda.TDATask.")
    return task


def make_sketcher(task: TDATask, sketch, *, layout: str = "flat", mode: str = "explicit"):
    """A ``GradientSketcher`` for the task's model and loss with the given sketch."""
    from sketchcore.gradients import GradientSketcher

    return GradientSketcher(task.model, task.loss_fn, sketch=sketch, params=task.params,
                            layout=layout, mode=mode, forward=task.forward)
