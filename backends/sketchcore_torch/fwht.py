"""The Walsh-Hadamard transform in torch as a short chain of small dense matmuls.

``H_n = H_{r_1} x ... x H_{r_k}`` (Sylvester order), so the transform of the last axis is one
matmul per factor: the lowest ``log2 r_k`` bits with ``X.reshape(-1, r_k) @ H_{r_k}`` (one large
GEMM), then each higher factor as a batched ``H_r @ X.view(-1, r, h)`` on a middle axis. With
factors of 32 this makes ~log2(n)/5 passes over memory instead of log2(n) butterfly passes, which
is why it beats the radix-2 ``out=`` ping-pong and the ``@ H_64`` hybrid on large inputs (timings:
docs/results.md, section "1b. FWHT vs the memory floor, every CPU backend"). On CUDA the same code runs as cuBLAS batched
GEMMs. Imported only when a torch kernel runs.
"""

from __future__ import annotations

import torch

__all__ = ["fwht_matmul", "radix_sizes", "hadamard_matrix"]

#: Factor size of each matmul stage. Larger factors mean fewer passes but 2*r flops per element.
RADIX = 32

_MATRICES: dict[tuple, torch.Tensor] = {}


def hadamard_matrix(r: int, dtype, device) -> torch.Tensor:
    """The unnormalized ``r x r`` Sylvester Hadamard matrix (cached per dtype and device)."""
    key = (r, dtype, str(device))
    h = _MATRICES.get(key)
    if h is None:
        h = torch.ones((1, 1), dtype=dtype, device=device)
        while h.shape[0] < r:
            h = torch.cat((torch.cat((h, h), dim=1), torch.cat((h, -h), dim=1)), dim=0)
        _MATRICES[key] = h
    return h


def radix_sizes(n: int, radix: int = RADIX) -> list[int]:
    """Factor sizes (powers of two, at most ``radix``, product ``n``), lowest bits first."""
    sizes = []
    while n > 1:
        r = min(radix, n)
        sizes.append(r)
        n //= r
    return sizes or [1]


def fwht_matmul(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * H_n x`` on the last axis (unnormalized H, n a power of two); a new tensor.

    Plain torch ops on plain tensors; callers wrap it in an autograd Function.
    """
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(
            f"the Walsh-Hadamard transform needs a power-of-two length on the last axis, got {n}; "
            "the sketches pad automatically (sketchcore.kernels.pad_last pads by hand)."
        )
    batch = x.shape[:-1]
    sizes = radix_sizes(n)
    first = sizes[0]
    h = hadamard_matrix(first, x.dtype, x.device)
    if scale != 1.0:
        h = h * scale
    y = torch.matmul(x.reshape(-1, first), h)  # H is symmetric: X @ H == (H X^T)^T
    span = first
    for r in sizes[1:]:
        hr = hadamard_matrix(r, x.dtype, x.device)
        y = torch.matmul(hr, y.view(-1, r, span))
        span *= r
    return y.view(*batch, n)
