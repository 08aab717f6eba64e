"""sketchcore_cupy: the CUDA backend for cupy arrays, registered through the
``sketchcore.backends`` entry point ``cupy``.

Importing this package does not import cupy: ``CupyBackend.owns`` looks cupy up in
``sys.modules``, ``check()`` and the kernels import it when they first run. The Walsh-Hadamard
transforms run fused CUDA kernels (``_fwht_kernel``); everything else is the array-API reference on
``array_api_compat.cupy``.
"""

from __future__ import annotations

import sketchcore

from .backend import CupyBackend

__all__ = ["CupyBackend"]


@sketchcore.hookimpl
def sketchcore_register_backends(register):
    register(CupyBackend())
