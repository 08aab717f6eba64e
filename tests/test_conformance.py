"""The public conformance suite: ``check_backend`` on every registered backend, and proof that it
catches broken kernels (so a pass means something)."""

from __future__ import annotations

import subprocess
import sys

import array_api_compat.numpy as anp
import numpy as np
import pytest
from conftest import backend_params

import sketchcore as sk
from sketchcore.backend import Backend
from sketchcore.testing import check_backend

# The reference kernels are namespace-independent code (checked on array_api_strict in
# test_cross_backend.py and below), so the registered backends are compared with them on numpy
# from host copies of the same inputs. Running them in each backend's own namespace gives the
# same verdict but costs far more where eager mode compiles every new shape: jax measured 65 s
# of CPU against 14 s this way.
HOST_REFERENCE = Backend(anp)


@pytest.mark.parametrize("name", backend_params())
def test_registered_backend_conforms(name):
    assert check_backend(name, reference=HOST_REFERENCE) >= 40  # 49 without float64


def test_reference_kernels_conform_in_their_own_namespace():
    """The default (reference on the backend's own namespace) on the strictest namespace."""
    xs = pytest.importorskip("array_api_strict")
    assert check_backend(Backend(xs)) > 50


class _Broken(Backend):
    """A numpy backend with five different contract violations."""

    name = "broken-on-purpose"

    def __init__(self):
        super().__init__(anp)

    def fwht(self, x, /):  # wrong values: the last coefficient's sign is flipped
        y = super().fwht(x)
        if y.shape[-1] > 1:
            y = np.concatenate([y[..., :-1], -y[..., -1:]], axis=-1)
        return y

    def hadamard(self, x, plan, /, *, diag=None):  # wrong dtype: float32 in, float64 out
        return super().hadamard(x, plan, diag=diag).astype(np.float64)

    def hartley(self, x, plan, /, *, diag=None):
        raise NotImplementedError("hartley is not written yet")

    def kron_matmul(self, x, factors, /):  # modifies its input
        y = super().kron_matmul(x, factors)
        if x.size:
            x[..., 0] = 0.0
        return y

    def ell_matvec(self, x, idx, vals, /):  # drops duplicate indices within a row
        idx = np.asarray(idx)
        vals = np.array(vals)
        for r in range(idx.shape[0]):
            _, first = np.unique(idx[r], return_index=True)
            keep = np.zeros(idx.shape[1], dtype=bool)
            keep[first] = True
            vals[r, ~keep] = 0
        return super().ell_matvec(x, idx, vals)


def test_check_backend_reports_every_broken_kernel():
    with pytest.raises(AssertionError) as info:
        check_backend(_Broken())
    msg = str(info.value)
    assert "broken-on-purpose" in msg
    assert "fwht [n=" in msg and "max error" in msg
    assert "Parseval" in msg or "involution" in msg
    assert "hadamard [" in msg and "returned dtype float64, expected float32" in msg
    assert "hartley [" in msg and "raised NotImplementedError: hartley is not written yet" in msg
    assert "kron_matmul [" in msg and "modified its input #0" in msg
    assert "ell_matvec [" in msg and "vs the reference exceeds the tolerance" in msg
    # the sketches built on the broken kernels fail too, and each case names its seed
    assert "Sketch(" in msg and "seed=(0, " in msg


def test_check_backend_catches_ignored_row_permutations():
    """A hadamard that drops the plan's row permutations: the kernel comparison sees it, and so
    does the adjoint identity (the transposed plan's rows are the forward plan's columns)."""

    class DropsRowPerms(Backend):
        name = "drops-row-perms"

        def __init__(self):
            super().__init__(anp)

        def hadamard(self, x, plan, /, *, diag=None):
            plan = sk.KronPlan(plan.sizes, col_perm=plan.col_perm)
            return super().hadamard(x, plan, diag=diag)

    with pytest.raises(AssertionError) as info:
        check_backend(DropsRowPerms())
    msg = str(info.value)
    assert "hadamard [sizes=" in msg and "row perm(s)" in msg
    assert "adjoint identity" in msg


def test_check_backend_resolves_names_and_refuses_bad_input():
    with pytest.raises(sk.UnknownNameError, match="no-such-backend"):
        check_backend("no-such-backend")
    with pytest.raises(TypeError, match="registered backend name or a sketchcore.Backend"):
        check_backend(42)

    class Unusable(Backend):
        name = "unusable"

        def check(self):
            return "needs a device this machine lacks"

    with pytest.raises(sk.BackendUnavailableError, match="needs a device this machine lacks"):
        check_backend(Unusable())


def test_testing_package_imports_without_array_frameworks():
    code = (
        "import sys, sketchcore.testing as t\n"
        "heavy = {'torch', 'jax', 'numba', 'cupy', 'hypothesis'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert callable(t.check_backend)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
