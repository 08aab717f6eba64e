"""Deprecated alias of ``sketchcore_tda.example_tasks`` (renamed: it holds the built-in example
tasks). ``--task sketchcore_tda.tasks:digits`` still works this release, with the warning."""

from __future__ import annotations

from sketchcore._deprecated import warn_renamed

from .example_tasks import DigitsCNN, DigitsMLP, digits, flip_labels, minilm, tiny_gpt2

__all__ = ["digits", "tiny_gpt2", "minilm", "DigitsCNN", "DigitsMLP", "flip_labels"]

warn_renamed(__name__, "sketchcore_tda.example_tasks")
