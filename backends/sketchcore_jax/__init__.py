"""sketchcore_jax: the jax backend (CPU, GPU and TPU through XLA), registered through the
``sketchcore.backends`` entry point ``jax``.

Importing this package does not import jax: ``JaxBackend.owns`` looks jax up in ``sys.modules``
and the kernels import it when they first run. Each sketch direction runs as one jitted program
per operator, and works inside the caller's ``jax.jit``, ``jax.grad`` and ``jax.vmap``;
per-example gradients and HVPs of models live in ``sketchcore_jax.gradients``.
"""

from __future__ import annotations

import sketchcore

from .backend import JaxBackend

__all__ = ["JaxBackend"]


@sketchcore.hookimpl
def sketchcore_register_backends(register):
    register(JaxBackend())
