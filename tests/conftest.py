"""Shared test configuration: hypothesis profiles and which backends to exercise.

``SKETCHCORE_TEST_BACKENDS=numpy,torch`` limits the backends the cross-backend tests use; unset,
every installed and usable backend runs. An unknown name is an error, not a skip.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# tests import shared helpers as top-level modules (``import models``, ``from core.helpers ...``)
sys.path.insert(0, str(Path(__file__).resolve().parent))

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("SKETCHCORE_HYPOTHESIS_PROFILE", "ci"))


def selected_backends() -> list[str]:
    """Backend names the cross-backend tests should run on."""
    import sketchcore as sk

    infos = {b.name: b for b in sk.backends()}
    wanted = os.environ.get("SKETCHCORE_TEST_BACKENDS")
    if wanted:
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        unknown = [n for n in names if n not in infos]
        if unknown:
            raise pytest.UsageError(
                f"SKETCHCORE_TEST_BACKENDS names unknown backends {unknown}; known: {sorted(infos)}"
            )
        return names
    return sorted(infos)


def backend_params():
    """pytest params over the selected backends; unusable ones skip with their reason."""
    import sketchcore as sk

    infos = {b.name: b for b in sk.backends()}
    out = []
    for name in selected_backends():
        info = infos[name]
        marks = [] if info.usable else [pytest.mark.skip(reason=f"{name}: {info.reason}")]
        out.append(pytest.param(name, marks=marks, id=name))
    return out
