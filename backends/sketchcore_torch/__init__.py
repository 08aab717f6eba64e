"""sketchcore_torch: the torch backend (CPU and CUDA tensors), registered through the
``sketchcore.backends`` entry point ``torch``.

Importing this package does not import torch: ``TorchBackend.owns`` looks torch up in
``sys.modules`` and the kernels import it when they first run. Phi and Phi^T are differentiable
under autograd and ``torch.func`` (vmap, grad, jvp); per-example gradients and HVPs of models live
in ``sketchcore_torch.gradients``.
"""

from __future__ import annotations

import sketchcore

from .backend import TorchBackend

__all__ = ["TorchBackend"]


@sketchcore.hookimpl
def sketchcore_register_backends(register):
    register(TorchBackend())
