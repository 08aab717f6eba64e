"""``TorchBackend``: torch tensors (CPU and CUDA) with fused, differentiable transform kernels.

Importing this module does not import torch; the kernels import it when they first run. Every
kernel keeps the input's device (parameters arrive on it through the operator's ``ParamCache``;
gather indices and Hadamard blocks are cached per device), never synchronizes with the host, and
is differentiable under autograd and ``torch.func``.
"""

from __future__ import annotations

import sys

from sketchcore import Backend

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """Kernels for ``torch.Tensor``: matmul-radix FWHT, fused permuted Hadamard, gather-based
    sparse products; everything else is the array-API reference on ``array_api_compat.torch``."""

    name = "torch"
    array_module = "torch"
    priority = 10
    description = "torch tensors (CPU/CUDA): matmul-radix FWHT, fused permuted Hadamard, autograd"
    gradients_module = "sketchcore_torch.gradients"

    def namespace(self):
        import array_api_compat.torch as xp

        return xp

    def owns(self, x) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(x, torch.Tensor)

    # ---- operator application ---------------------------------------------------------------
    def apply_op(self, op, direction: str, x):
        """Untracked plain CPU tensors of affd/afjl run the host backend's fused passes (see
        ``host.apply_fused``); everything else composes this backend's kernels."""
        from .host import apply_fused

        y = apply_fused(op, direction, x)
        return y if y is not None else super().apply_op(op, direction, x)

    def scratch_is_bounded(self, op, direction: str, x) -> bool:
        from .host import fused_view

        return fused_view(op, direction, x) is not None

    def is_traced(self, x) -> bool:
        """A tensor wrapped by a ``torch.func`` transform (grad, vmap, jvp), or any tensor while
        one runs: values built from it belong to that transform."""
        functorch = sys.modules["torch"]._C._functorch
        return bool(functorch.is_functorch_wrapped_tensor(x)
                    or functorch.peek_interpreter_stack() is not None)

    # ---- kernels --------------------------------------------------------------------------
    def fwht(self, x, /):
        from .autograd import Fwht

        return Fwht.apply(x)

    def hadamard(self, x, plan, /, *, diag=None):
        from .autograd import PermutedHadamard

        return PermutedHadamard.apply(x, diag, plan)

    def hartley(self, x, plan, /, *, diag=None):
        from sketchcore.kernels import hartley

        from .plans import device_take

        cols = device_take(plan, "cols", x.device)
        rows = device_take(plan, "rows", x.device)
        if diag is not None:
            x = x * diag
        if x.numel() == 0:  # torch's MKL FFT rejects empty batches
            return x.new_zeros(x.shape)
        if cols is not None:
            x = x.index_select(-1, cols)
        y = hartley(self.namespace(), x)
        return y if rows is None else y.index_select(-1, rows)

    def ell_matvec(self, x, idx, vals, /):
        from .sparse import ell_matvec

        return ell_matvec(x, idx, vals)
