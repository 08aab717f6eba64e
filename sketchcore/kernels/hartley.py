"""The discrete Hartley transform: the real, orthogonal FFT-based preconditioner.

``(T x)_k = n^{-1/2} sum_j x_j cas(2 pi j k / n)``, ``cas = cos + sin``. With ``X = fft(x)``,
``T x = (Re X - Im X) / sqrt(n)``. T is real, symmetric and its own inverse, so it slots in where
the normalized Hadamard transform goes and is its own transpose. Computed from one real FFT: for
``k > n/2``, ``X_k = conj(X_{n-k})``.
"""

from __future__ import annotations

import math

from ..array_namespace import device_of

__all__ = ["hartley"]


def hartley(xp, x):
    """Normalized discrete Hartley transform of the last axis (any length)."""
    n = x.shape[-1]
    if math.prod(x.shape) == 0:  # some FFT libraries (torch/MKL) refuse empty inputs
        return xp.zeros(x.shape, dtype=x.dtype, device=device_of(x))
    spec = xp.fft.rfft(x, axis=-1)
    re = xp.real(spec)
    im = xp.imag(spec)
    head = re - im  # k = 0 .. n//2
    tail = xp.flip((re + im)[..., 1 : (n + 1) // 2], axis=-1)  # k = n//2+1 .. n-1
    out = xp.concat((head, tail), axis=-1) if n > 2 else head[..., :n]
    return out * (1.0 / float(n) ** 0.5)
