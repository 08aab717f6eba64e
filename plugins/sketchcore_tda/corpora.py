"""Deprecated alias of ``sketchcore_examples.corpora`` (moved: the example corpora are shared by
every analysis, the demo, the tests and the benchmarks)."""

from __future__ import annotations

from sketchcore._deprecated import warn_renamed
from sketchcore_examples.corpora import TOPICS, byte_sequences, docstring_sentences

__all__ = ["TOPICS", "docstring_sentences", "byte_sequences"]

warn_renamed(__name__, "sketchcore_examples.corpora")
