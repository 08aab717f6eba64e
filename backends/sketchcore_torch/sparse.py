"""``ell_matvec`` for torch: the reference gathers, or a CSR product when most slots are padding.

A padded-row (ELL) matrix whose rows have very different lengths (FJL's ``G_s^T``: each of the N
columns of ``G_s`` holds ~D k / N entries, padded to the longest) wastes most of its gathers on
zero slots. For fjl's transposed ELL (N=2^22, D=2^14, k=22: 4M x 6 slots, 1.4% filled) one CSR
product does a small part of the gathers' work; for the forward ELL (all slots filled) the gathers
do no wasted work and CSR only adds its own overhead (the torch backend's timings: docs/results.md,
section "1c. Every backend vs D and vs N"). So the CSR path is taken when fewer than half of the
slots are filled. The CSR matrix is built on the input's device
once per index array, and used only when no gradient is recorded and no ``torch.func`` transform
is active (torch's sparse kernels have no vmap rules); otherwise the differentiable gathers run.
"""

from __future__ import annotations

import warnings
import weakref

import torch

from sketchcore.kernels import ell_matvec as ell_matvec_gather

from . import host

__all__ = ["ell_matvec", "FILL_THRESHOLD"]

#: Use the CSR product when the fraction of non-zero slots is below this.
FILL_THRESHOLD = 0.5

# id(idx) -> (ref to idx, ref to vals, columns, dtype, CSR or None). Keyed by id, not by the
# tensor: tensors compare elementwise, which a weak-keyed dict would trip over.
_CSR: dict[int, tuple] = {}


def _is_plain(x: torch.Tensor) -> bool:
    """Whether ``x`` is an ordinary tensor (not a functorch wrapper of vmap/grad/jvp)."""
    try:
        return not torch._C._functorch.is_functorch_wrapped_tensor(x)
    except AttributeError:  # a torch without functorch internals: assume a plain tensor
        return True


def _csr(idx: torch.Tensor, vals: torch.Tensor, cols: int):
    """The CSR form of the ELL pair (None when the ELL is dense enough for gathers)."""
    entry = _CSR.get(id(idx))
    if entry is not None and entry[0]() is idx and entry[1]() is vals and entry[2:4] == (
        cols, vals.dtype
    ):
        return entry[4]
    keep = vals != 0
    filled = int(keep.sum())  # one host sync, on the cold path only
    csr = None
    if filled < FILL_THRESHOLD * max(1, vals.numel()):
        rows = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1).expand_as(idx)
        r, c, v = rows[keep], idx[keep], vals[keep]
        order = torch.argsort(r * cols + c)
        r, c, v = r[order], c[order], v[order]
        crow = torch.zeros(idx.shape[0] + 1, dtype=torch.int64, device=idx.device)
        crow[1:] = torch.cumsum(torch.bincount(r, minlength=idx.shape[0]), 0)
        with warnings.catch_warnings():  # "CSR support is in beta": nothing for a user to do
            warnings.simplefilter("ignore", UserWarning)
            csr = torch.sparse_csr_tensor(crow, c, v, size=(idx.shape[0], cols))
    key = id(idx)
    _CSR[key] = (weakref.ref(idx, lambda _ref: _CSR.pop(key, None)), weakref.ref(vals), cols,
                 vals.dtype, csr)
    return csr


def ell_matvec(x: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """``y[..., r] = sum_s vals[r, s] * x[..., idx[r, s]]`` on ``x``'s device."""
    import array_api_compat.torch as xp

    tracked = torch.is_grad_enabled() and (x.requires_grad or vals.requires_grad)
    if tracked or not _is_plain(x) or x.ndim == 0 or x.numel() == 0:
        return ell_matvec_gather(xp, x, idx, vals)
    y = host.ell_matvec(x, idx, vals)  # compiled host kernels for CPU tensors, if any
    if y is not None:
        return y
    csr = _csr(idx, vals, x.shape[-1])
    if csr is None:
        return ell_matvec_gather(xp, x, idx, vals)
    batch = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    y = torch.sparse.mm(csr, flat.T.contiguous())  # (rows, batch)
    return y.T.reshape(*batch, idx.shape[0])
