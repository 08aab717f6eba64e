"""The orthogonal preconditioners of AFFD/AFJL: permuted Kronecker Hadamard (default), the
discrete Hartley transform (the real, orthogonal FFT choice), and Kronecker Haar factors ("q").

Each preconditioner is an orthogonal map on R^N' (N' the padded size) that can be applied with an
optional diagonal in front (``diag * x`` first, so backends may fuse it), and has a transpose.
"""

from __future__ import annotations

from .. import _random as rnd
from .._deprecated import renamed_method
from .._errors import unknown
from ..kron_plans import KronPlan, pow2_factors

__all__ = ["PRECONDITIONERS", "make_preconditioner"]

PRECONDITIONERS = ("hadamard", "fft", "q")


class _Preconditioner:
    """``apply(be, x, diag=None)`` and ``transpose(be, x, diag=None)``, in subclasses."""

    apply_t = renamed_method("preconditioner", "apply_t", "transpose")


class _Permuted(_Preconditioner):
    """``P T P'`` with Kronecker-structured permutations; ``kernel`` names the Backend method."""

    uses_signs = True

    def __init__(self, kernel: str, plan: KronPlan):
        self.kernel = kernel
        self.plan = plan

    def apply(self, be, x, diag=None):
        return getattr(be, self.kernel)(x, self.plan, diag=diag)

    def transpose(self, be, x, diag=None):
        return getattr(be, self.kernel)(x, self.plan.transpose(), diag=diag)


class _Haar(_Preconditioner):
    """A Kronecker product of Haar-random orthogonal ``B_i x B_i`` factors (no signs needed)."""

    uses_signs = False

    def __init__(self, params, prefix: str, seed: int, sizes):
        self.params = params
        self.names = []
        self.names_t = []
        for i, b in enumerate(sizes):
            q = rnd.haar_rows(seed, f"{prefix}/haar{i}", b, b)
            params.add(f"{prefix}/q{i}", q)
            params.add(f"{prefix}/qt{i}", q.T.copy(), derived=True)
            self.names.append(f"{prefix}/q{i}")
            self.names_t.append(f"{prefix}/qt{i}")

    def _run(self, be, x, names, diag):
        xp = be.namespace()
        if diag is not None:
            x = x * diag
        return be.kron_matmul(x, [self.params.get(xp, x, n) for n in names])

    def apply(self, be, x, diag=None):
        return self._run(be, x, self.names, diag)

    def transpose(self, be, x, diag=None):
        return self._run(be, x, self.names_t, diag)


def make_preconditioner(kind, params, prefix, seed, n, max_block, side):
    """Build one preconditioner of size ``n`` (a power of two). ``side`` is "rows" (H^{pi1}:
    permute the output inside factors) or "cols" (H^{pi2}: permute the input inside factors)."""
    if kind not in PRECONDITIONERS:
        raise unknown("preconditioner", kind, PRECONDITIONERS)
    sizes = pow2_factors(n, max_block)
    if kind == "q":
        return _Haar(params, prefix, seed, sizes)
    perms = [rnd.permutation(seed, f"{prefix}/perm{i}", b) for i, b in enumerate(sizes)]
    for i, p in enumerate(perms):  # kept by the plan; registered so they count and are hashed
        params.add(f"{prefix}/perm{i}", p)
    plan = KronPlan(sizes, row_perm=perms) if side == "rows" else KronPlan(sizes, col_perm=perms)
    return _Permuted("hadamard" if kind == "hadamard" else "hartley", plan)
