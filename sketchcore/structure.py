"""Deprecated alias: ``sketchcore.kron_plans`` (factorizations, ``KronPlan``) and
``sketchcore.param_cache`` (``ParamCache``, ``arrays_sha256``, ``host_memory_bytes``)."""

from __future__ import annotations

from ._deprecated import warn_renamed
from .kron_plans import KronPlan, balanced_factors, next_pow2, pow2_factors
from .param_cache import ParamCache, arrays_sha256, host_memory_bytes

__all__ = [
    "next_pow2", "pow2_factors", "balanced_factors", "ParamCache", "KronPlan", "arrays_sha256",
    "host_memory_bytes",
]

warn_renamed(__name__, "sketchcore.kron_plans and sketchcore.param_cache")
