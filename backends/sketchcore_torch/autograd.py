"""The fast transforms as ``torch.autograd.Function``s, so Phi and Phi^T stay differentiable.

Both transforms are linear, so their backward is their transpose: the FWHT is symmetric, and the
permuted Kronecker Hadamard ``M = P H P'`` has ``M^T`` given by ``plan.transpose()``. The backward
calls the Function again, so higher derivatives work. ``setup_context`` plus explicit ``vmap`` and
``jvp`` rules make them work under ``torch.func`` (``vmap``, ``grad``, ``jvp``, ``hessian``): the
kernels act on the last axis and broadcast over leading axes, so a vmapped call moves the mapped
axis to the front and runs once on the whole stack. Imported only when a torch kernel runs.
"""

from __future__ import annotations

import torch

from . import host
from .fwht import fwht_matmul
from .plans import device_take

__all__ = ["Fwht", "PermutedHadamard", "permuted_hadamard"]


def permuted_hadamard(x: torch.Tensor, diag, plan) -> torch.Tensor:
    """``plan`` applied to ``diag * x``: on the compiled host kernels for plain CPU tensors
    (``host``), otherwise with plain ops: one column gather (diag folded in), the FWHT with the
    ``1/sqrt(n)`` scale folded into its first matmul, one row gather."""
    y = host.hadamard(x, diag, plan)
    if y is not None:
        return y
    cols = device_take(plan, "cols", x.device)
    rows = device_take(plan, "rows", x.device)
    if cols is not None:
        x = x.index_select(-1, cols)
        if diag is not None:
            d = diag.index_select(-1, cols)
            x = x.mul_(d) if torch.broadcast_shapes(x.shape, d.shape) == x.shape else x * d
    elif diag is not None:
        x = x * diag
    y = fwht_matmul(x, scale=1.0 / float(plan.n) ** 0.5)
    if rows is not None:
        y = y.index_select(-1, rows)
    return y


def _front(t: torch.Tensor, dim, ndim: int) -> torch.Tensor:
    """Move vmap's mapped axis ``dim`` of ``t`` to the front, aligned with ``ndim`` axes."""
    t = t.movedim(dim, 0)
    missing = ndim - t.ndim
    if missing > 0:
        t = t.reshape(t.shape[0], *([1] * missing), *t.shape[1:])
    return t


class Fwht(torch.autograd.Function):
    """Unnormalized FWHT of the last axis; symmetric, so backward and jvp are the FWHT again."""

    @staticmethod
    def forward(x):
        y = host.fwht(x)
        return fwht_matmul(x) if y is None else y

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return Fwht.apply(grad)

    @staticmethod
    def jvp(ctx, tangent):
        return Fwht.apply(tangent)

    @staticmethod
    def vmap(info, in_dims, x):
        return Fwht.apply(x.movedim(in_dims[0], 0)), 0


class PermutedHadamard(torch.autograd.Function):
    """``y = M (diag * x)`` for a ``KronPlan`` M of normalized Hadamard factors.

    Backward: ``x_bar = diag * M^T y_bar`` (M^T = ``plan.transpose()``), and, when ``diag`` needs a
    gradient, ``diag_bar = sum over batch of x * M^T y_bar``.
    """

    @staticmethod
    def forward(x, diag, plan):
        return permuted_hadamard(x, diag, plan)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, diag, plan = inputs
        ctx.plan = plan
        ctx.save_for_backward(x, diag)
        ctx.save_for_forward(x, diag)

    @staticmethod
    def backward(ctx, grad):
        x, diag = ctx.saved_tensors
        t = PermutedHadamard.apply(grad, None, ctx.plan.transpose())
        gx = gd = None
        if ctx.needs_input_grad[0]:
            gx = t if diag is None else (t * diag).sum_to_size(x.shape)
        if diag is not None and ctx.needs_input_grad[1]:
            gd = (t * x).sum_to_size(diag.shape)
        return gx, gd, None

    @staticmethod
    def jvp(ctx, x_tangent, diag_tangent, _plan_tangent):
        x, diag = ctx.saved_tensors
        out = None
        if x_tangent is not None:
            out = PermutedHadamard.apply(x_tangent, diag, ctx.plan)
        if diag_tangent is not None:
            term = PermutedHadamard.apply(x, diag_tangent, ctx.plan)
            out = term if out is None else out + term
        return out

    @staticmethod
    def vmap(info, in_dims, x, diag, plan):
        x_dim, diag_dim = in_dims[0], in_dims[1]
        if diag_dim is None:
            return PermutedHadamard.apply(x.movedim(x_dim, 0), diag, plan), 0
        x = x.unsqueeze(0) if x_dim is None else x.movedim(x_dim, 0)
        return PermutedHadamard.apply(x, _front(diag, diag_dim, x.ndim), plan), 0
