"""Whether an array lives inside a trace is the owning backend's answer (``Backend.is_traced``),
and ``ParamCache`` caches nothing built from an array its backend calls traced."""

from __future__ import annotations

import numpy as np

import sketchcore as sk
from sketchcore.param_cache import ParamCache
from sketchcore.registry import registry


def test_default_is_traced_is_false_for_concrete_arrays():
    x = np.ones(3)
    assert sk.Backend(np).is_traced(x) is False
    assert registry().backend_for(x).is_traced(x) is False


def test_param_cache_asks_the_backend_that_owns_the_array(monkeypatch):
    x = np.ones(4)
    owner = type(registry().backend_for(x))
    calls = []

    def traced(self, arr):
        calls.append((self.name, arr is x))
        return True

    monkeypatch.setattr(owner, "is_traced", traced)
    cache, builds = ParamCache(), []

    def build():
        builds.append(1)
        return len(builds)

    assert cache.cached(np, x, "k", build) == 1
    assert calls == [(registry().backend_for(x).name, True)]
    assert cache.cached(np, x, "k", build) == 2  # traced: rebuilt, never cached
    monkeypatch.setattr(owner, "is_traced", lambda self, arr: False)
    assert cache.cached(np, x, "k", build) == 3
    assert cache.cached(np, x, "k", build) == 3  # concrete: built once, then cached
