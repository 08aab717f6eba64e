"""Portable reference kernels, written against the array API standard only.

They are the fallback every backend inherits and the oracle every backend is tested against. They
take the namespace ``xp`` explicitly, never update arrays in place, use static shapes only, and run
on ``array_api_strict`` arrays. Backends override the ``Backend`` methods that call them.
"""

from .hadamard import fwht, fwht_butterfly, hadamard_matrix, kron_hadamard_dense
from .hartley import hartley
from .kron import kron_matmul, take_factors
from .sparse import ell_matvec
from .shapes import pad_last

__all__ = [
    "fwht",
    "fwht_butterfly",
    "hadamard_matrix",
    "kron_hadamard_dense",
    "hartley",
    "kron_matmul",
    "take_factors",
    "ell_matvec",
    "pad_last",
]
