"""Renamed modules keep their old name one release: importing it warns (DeprecationWarning) and
gives the same objects as the new modules. Nothing else in the tests imports an old name: the
pytest configuration turns that warning into an error."""

from __future__ import annotations

import importlib
import sys

import pytest

#: old module -> {name: new module that defines it}
RENAMED = {
    "sketchcore._namespace": {
        "namespace_of": "sketchcore.array_namespace", "device_of": "sketchcore.array_namespace",
        "from_host": "sketchcore.array_namespace", "default_float": "sketchcore.array_namespace",
    },
    "sketchcore.structure": {
        "KronPlan": "sketchcore.kron_plans", "next_pow2": "sketchcore.kron_plans",
        "pow2_factors": "sketchcore.kron_plans", "balanced_factors": "sketchcore.kron_plans",
        "ParamCache": "sketchcore.param_cache", "arrays_sha256": "sketchcore.param_cache",
        "host_memory_bytes": "sketchcore.param_cache",
    },
    "sketchcore_tda.task": {
        n: "sketchcore_tda.task_spec"
        for n in ("TDATask", "load_task", "parse_task_args", "make_sketcher")
    },
    "sketchcore_tda.tasks": {
        n: "sketchcore_tda.example_tasks"
        for n in ("digits", "tiny_gpt2", "minilm", "DigitsCNN", "DigitsMLP", "flip_labels")
    },
    "sketchcore_tda.corpora": {
        n: "sketchcore_examples.corpora" for n in ("TOPICS", "docstring_sentences", "byte_sequences")
    },
}


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_old_module_name_warns_and_reexports(old, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=rf"module {old} is renamed .*next release"):
        module = importlib.import_module(old)
    for name, new in RENAMED[old].items():
        assert getattr(module, name) is getattr(importlib.import_module(new), name), name


def test_deprecated_is_traced_asks_the_owning_backend(monkeypatch):
    import numpy as np

    monkeypatch.delitem(sys.modules, "sketchcore._namespace", raising=False)
    with pytest.warns(DeprecationWarning):
        from sketchcore._namespace import is_traced
    assert is_traced(np.ones(2)) is False
