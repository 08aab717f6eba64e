"""CPU tensors through the compiled host kernels of the numpy backend, zero-copy.

A CPU tensor's buffer is host memory that numpy can view without a copy, and the backend that
serves numpy arrays may have compiled kernels for exactly the transforms the sketches spend their
time in (the numba backend declares ``compiled_host_kernels``; how much faster they are than
torch's own ops: docs/results.md, section 1c). So the torch kernels first offer a plain CPU float
tensor to that backend and fall back to their own ops when there is none, when the tensor is not
plain (a ``torch.func`` wrapper, whose buffer numpy cannot see) or not float32/float64, or when
``SKETCHCORE_TORCH_HOST_KERNELS=0``. Untracked tensors of affd/afjl go through the host's fused
forward as a whole (``apply_fused``); tracked ones kernel by kernel, inside ``autograd.Function``
forwards whose backward calls them again, so autograd is unaffected. Which backend serves numpy
arrays is looked up in the registry on each call (a dict lookup), so a refreshed registry is
honoured.

torch's intra-op thread count survives these calls: numba's first parallel launch (its OpenMP
threading layer) sets the OpenMP thread count of the libgomp it shares with torch to numba's
own, which silently undid ``torch.set_num_threads(1)`` (``_keeping_torch_threads``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["host_backend", "host_view", "fused_view", "apply_fused", "hadamard", "fwht", "ell_matvec", "enabled"]

_DTYPES = (torch.float32, torch.float64)
_PROBE = np.empty(0, dtype=np.float32)


def enabled() -> bool:
    """Whether CPU tensors may use the host kernels (``SKETCHCORE_TORCH_HOST_KERNELS=0`` stops it)."""
    return os.environ.get("SKETCHCORE_TORCH_HOST_KERNELS", "1") != "0"


def host_backend():
    """The backend serving numpy arrays if its kernels are compiled, else None."""
    if not enabled():
        return None
    from sketchcore.registry import registry

    be = registry().backend_for(_PROBE)
    return be if getattr(be, "compiled_host_kernels", False) else None


@contextmanager
def _keeping_torch_threads():
    """Put torch's intra-op thread count back if the host kernel changed it."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def _is_wrapped(t: torch.Tensor) -> bool:
    try:
        return torch._C._functorch.is_functorch_wrapped_tensor(t)
    except AttributeError:  # pragma: no cover - a torch without functorch internals
        return False


def host_view(t: torch.Tensor) -> np.ndarray | None:
    """A zero-copy numpy view of a plain, non-empty CPU float32/float64 tensor, or None."""
    if t.device.type != "cpu" or t.dtype not in _DTYPES or t.numel() == 0 or _is_wrapped(t):
        return None
    try:
        return t.detach().numpy()
    except (RuntimeError, TypeError):  # conjugate/negative views and other exotic tensors
        return None


def fused_view(op, direction: str, x: torch.Tensor):
    """(host backend, numpy view of ``x``) when the host backend runs ``op``'s ``direction`` on
    ``x`` as one fused pass, else None: only untracked plain CPU tensors (a tensor that autograd
    records goes through the differentiable per-kernel path, whose backward is the transpose)."""
    if (direction != "apply" or getattr(op, "name", None) not in ("affd", "afjl")
            or getattr(op, "options", {}).get("preconditioner") != "hadamard"):
        return None
    if x.requires_grad and torch.is_grad_enabled():
        return None
    be = host_backend()
    xn = None if be is None else host_view(x)
    if xn is None or not be.scratch_is_bounded(op, direction, xn):
        return None
    return be, xn


def apply_fused(op, direction: str, x: torch.Tensor) -> torch.Tensor | None:
    """A whole operator direction on the host backend's fused affd/afjl passes, or None when
    ``fused_view`` refuses ``x``."""
    found = fused_view(op, direction, x)
    if found is None:
        return None
    be, xn = found
    with _keeping_torch_threads():
        return torch.from_numpy(np.asarray(be.apply_op(op, direction, xn)))


def hadamard(x: torch.Tensor, diag, plan) -> torch.Tensor | None:
    """``M (diag * x)`` for ``plan`` on the host backend, or None when it cannot take ``x``."""
    be = host_backend()
    if be is None:
        return None
    xn = host_view(x)
    if xn is None:
        return None
    dn = None
    if diag is not None:
        if diag.dtype != x.dtype or tuple(diag.shape) != (plan.n,):
            return None
        dn = host_view(diag)
        if dn is None:
            return None
    with _keeping_torch_threads():
        return torch.from_numpy(be.hadamard(xn, plan, diag=dn))


def fwht(x: torch.Tensor) -> torch.Tensor | None:
    """The unnormalized FWHT on the host backend, or None when it cannot take ``x``."""
    be = host_backend()
    xn = None if be is None else host_view(x)
    if xn is None:
        return None
    with _keeping_torch_threads():
        return torch.from_numpy(be.fwht(xn))


def ell_matvec(x: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor | None:
    """The ELL product on the host backend (untracked callers only), or None."""
    be = host_backend()
    if be is None or vals.dtype != x.dtype:
        return None
    xn, vn = host_view(x), host_view(vals)
    if xn is None or vn is None or idx.device.type != "cpu" or _is_wrapped(idx):
        return None
    with _keeping_torch_threads():
        return torch.from_numpy(be.ell_matvec(xn, idx.numpy(), vn))
