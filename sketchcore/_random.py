"""Seeded randomness: every random component is a pure function of (seed, component name, index).

The array API has no random module, so the numbers are made once on the host with numpy's
counter-based Philox generator, keyed by a BLAKE2b hash of ``(seed, name, index)``, and then moved
to whatever array library applies the sketch. That makes a sketch bit-identical on every backend
and device (TRAK's CUDA projector, by contrast, differs between GPUs), independent of batch size
and chunking, and free of any global random state. Keys are derived by hashing, never by seed
arithmetic, so components and blocks can never collide. Nothing here goes through BLAS or
LAPACK, whose last bits vary with the CPU: the Haar factors' QR is ``portable_qr``'s, made of
IEEE-exact operations in a fixed order, so the numbers are the same on every machine too (with the
same numpy; one exception: numpy's Gaussian tail values, about 1 in 4000, go through the C
library's ``log1p``, whose last bit can differ between C libraries and CPUs).
"""

from __future__ import annotations

import hashlib
import operator

import numpy as np

from ._errors import InvalidOptionError, describe_value
from .portable_qr import householder_qr_positive

__all__ = ["MAX_SEED", "check_seed", "rng", "signs", "gaussians", "permutation", "haar_rows"]

MAX_SEED = 2**64
_DOMAIN = "sketchcore/v1"


def check_seed(seed: object) -> int:
    """Validate a seed: a Python (or numpy) integer in ``[0, 2**64)``."""
    if isinstance(seed, bool):
        raise InvalidOptionError(f"seed must be an integer in [0, 2**64), got the bool {seed!r}.")
    try:
        value = operator.index(seed)
    except TypeError:
        raise InvalidOptionError(
            f"seed must be an integer in [0, 2**64), got {describe_value(seed)} of type "
            f"{type(seed).__name__}; pass e.g. seed=0."
        ) from None
    if not 0 <= value < MAX_SEED:
        raise InvalidOptionError(
            f"seed must be in [0, 2**64), got {describe_value(value)}; reduce it, e.g. "
            "seed % 2**64."
        )
    return value


def rng(seed: int, name: str, index: int = 0) -> np.random.Generator:
    """The generator of one component (or one block ``index`` of a component)."""
    digest = hashlib.blake2b(f"{_DOMAIN}/{seed}/{name}/{index}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.Philox(key=int.from_bytes(digest, "little")))


def signs(seed: int, name: str, n: int) -> np.ndarray:
    """``n`` independent Rademacher signs (float64, exactly +-1)."""
    bits = rng(seed, name).integers(0, 2, size=n, dtype=np.int8)
    return 1.0 - 2.0 * bits.astype(np.float64)


def gaussians(seed: int, name: str, shape, index: int = 0) -> np.ndarray:
    """Standard normal numbers of ``shape`` (float64)."""
    return rng(seed, name, index).standard_normal(shape)


def permutation(seed: int, name: str, n: int) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` (int64)."""
    return rng(seed, name).permutation(n).astype(np.int64)


def haar_rows(seed: int, name: str, rows: int, cols: int) -> np.ndarray:
    """The first ``rows`` rows of a Haar-random ``cols x cols`` orthogonal matrix (float64).

    QR of a ``cols x rows`` Gaussian matrix with the signs of R's diagonal moved into Q, which
    makes Q exactly Haar-distributed (Mezzadri 2007); its transpose has orthonormal rows. The QR
    is ``portable_qr``'s, not LAPACK's: built from IEEE-exact elementwise operations in a fixed
    order, it gives the same bits on every machine (LAPACK's differs in the last bits between
    CPUs and builds), and equals LAPACK's to rounding.
    """
    if rows > cols:
        raise InvalidOptionError(f"a Haar factor needs rows <= cols, got {rows} x {cols}.")
    g = gaussians(seed, name, (cols, rows))
    q, _ = householder_qr_positive(g)
    return np.ascontiguousarray(q.T)
