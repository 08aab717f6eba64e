"""Deprecated alias of ``sketchcore_tda.task_spec`` (renamed: it holds the task spec and loader)."""

from __future__ import annotations

from sketchcore._deprecated import warn_renamed

from .task_spec import TDATask, load_task, make_sketcher, parse_task_args

__all__ = ["TDATask", "load_task", "parse_task_args", "make_sketcher"]

warn_renamed(__name__, "sketchcore_tda.task_spec")
