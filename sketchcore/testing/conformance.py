"""``check_backend``: the kernel contracts of ``sketchcore.Backend``, checked on seeded inputs.

Every kernel of the backend is compared with the reference kernel (the base ``Backend`` methods,
by default on the backend's own namespace, ``Backend(xp)``) on the same inputs, and with
properties that need no
reference: the FWHT is an involution up to ``n``, keeps Parseval's identity, and small cases equal
dense matrices built on the host. Then the rules every kernel keeps (output dtype, namespace,
device and shape; batch axes behave like a loop; empty batches; inputs never modified) and, for
every algorithm x preconditioner, the sketch applied with the backend against the reference and
the adjoint identity ``<Phi x, y> = <x, Phi^T y>``. Failures are collected and raised together as
one ``AssertionError`` naming the kernel, the case (sizes, dtype, seed) and the largest error.
"""

from __future__ import annotations

import math
import warnings

__all__ = ["check_backend", "algorithm_variants", "to_numpy", "RTOL"]

#: Relative tolerances by dtype. eps is 6.0e-8 (float32) and 1.1e-16 (float64): both leave a
#: margin of about 100x eps for the rounding of the log2(n) stages of a transform and for two
#: implementations adding the same terms in different orders (see ``_sum_tolerance``).
RTOL = {"float32": 1e-5, "float64": 1e-12}

# Every list below is short on purpose: libraries whose eager mode compiles each new shape (jax)
# pay per distinct size, so the cases are few but chosen to hit the edges.
# (n, batch shape) of the FWHT cases: tiny sizes, sizes around a GPU tile (2^12), and sizes that
# need several passes over memory on a GPU (2^13, 2^16).
_FWHT_CASES = [
    (1, (3,)), (2, ()), (8, (2, 3)), (64, (2,)), (1024, (3,)), (4096, (2,)), (1 << 13, (2,)),
    (1 << 16, ()),
]
# Kronecker plans (factor sizes) for hadamard: one factor, several, many small ones, a factor of 1,
# plans larger than a 4096-element tile, and a small permuted factor under a big one. The cases
# alternate between no diagonal and a Gaussian one.
_HADAMARD_SIZES = [
    (1,), (16,), (4, 8), (2, 16, 4), (2, 2, 2, 2, 2), (1, 8), (1024,), (64, 128), (256, 64, 4),
    (2048, 16),
]
# The Hartley transform is defined for any length, so its plans include non-powers of two.
_HARTLEY_SIZES = [(1,), (16,), (4, 8), (3, 5), (2, 16, 4), (1024,), (64, 128)]
# (D_i, B_i) factor shapes of kron_matmul: square, wide, tall, three factors, 1x1, a 4096 input.
_KRON_SHAPES = [
    [(4, 4)], [(7, 5)], [(3, 4), (5, 2)], [(8, 8), (4, 16)], [(2, 3), (4, 4), (3, 2)],
    [(1, 1)], [(64, 64), (32, 64)], [(16, 32), (16, 32), (8, 8)],
]
# (input length, rows, slots) of ell_matvec.
_ELL_SHAPES = [(1, 3, 1), (7, 5, 3), (64, 33, 8), (1000, 17, 4), (4096, 64, 12)]
# (in_dim, out_dim, extra options) of the sketch checks: a small case whose padded size (512)
# splits into three Kronecker factors with max_block=16, and a larger one of two factors.
_SKETCH_SIZES = [(300, 40, {"max_block": 16}), (5000, 200, {})]


def to_numpy(a):
    """A numpy copy of an array of any array-API library (numpy, torch, jax, cupy, strict)."""
    import numpy as np

    if isinstance(a, np.ndarray):
        return a.copy()
    try:
        return np.array(np.from_dlpack(a), copy=True)
    except Exception:  # noqa: BLE001 - not on the host, or a dtype DLPack cannot carry
        pass
    try:
        import array_api_compat

        a = array_api_compat.to_device(a, "cpu")
    except Exception:  # noqa: BLE001 - already a host array
        pass
    try:
        with warnings.catch_warnings():  # torch's __array__ predates numpy 2's copy keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            return np.asarray(a).copy()
    except TypeError:  # a dtype numpy lacks (torch's bfloat16): widen it in its own library
        import array_api_compat

        xp = array_api_compat.array_namespace(a)
        return to_numpy(xp.astype(a, xp.float32))


def algorithm_variants() -> list[tuple[str, dict]]:
    """Every registered algorithm with its default options, once per preconditioner where it has
    that option: the (algo, options) pairs a backend must run."""
    from ..registry import registry
    from ..sketches.preconditioners import PRECONDITIONERS

    out = []
    for name, cls in sorted(registry().algorithms.items()):
        if "preconditioner" in getattr(cls, "default_options", {}):
            out.extend((name, {"preconditioner": p}) for p in PRECONDITIONERS)
        else:
            out.append((name, {}))
    return out


def _dtype_name(dtype) -> str:
    """``float32`` for numpy's scalar types, dtype objects and other libraries' dtypes alike."""
    name = getattr(dtype, "__name__", None)
    return name if isinstance(name, str) else str(dtype)


def _sum_tolerance(rtol: float, terms: int, term_bound: float) -> float:
    """Tolerance for outputs that are sums of ``terms`` products, each at most ``term_bound``.

    Two correct implementations add the same terms in different orders. In a tree-shaped sum
    (butterflies, pairwise sums, blocked BLAS) the rounding errors of the ~log2(terms) levels add
    up like a random walk to about eps * sqrt(terms * log2(terms)) * term_bound; a sequential sum
    reaches eps * terms * term_bound / sqrt(2). Scaling by sqrt(terms) with rtol ~ 170 eps covers
    both for every size used here (terms <= 2^16 for the tree-shaped FWHT, <= 2^13 otherwise).
    """
    return rtol * math.sqrt(max(terms, 1)) * term_bound


class _Checker:
    """State of one ``check_backend`` run: the backend, its reference, the failures so far."""

    def __init__(self, backend, seed: int, reference=None) -> None:
        import numpy as np

        from ..backend import Backend

        self.np = np
        self.be = backend
        self.xp = backend.namespace()
        self.ref = Backend(self.xp) if reference is None else reference
        self.foreign_ref = self.ref.namespace() is not self.xp
        self.seed = seed
        self.cases = 0
        self.failures: list[str] = []
        self.dtypes = ["float32"]
        probe = backend.asarray(np.zeros(2, dtype=np.float64))
        if probe.dtype == self.xp.float64:
            self.dtypes.append("float64")

    # ---- inputs -----------------------------------------------------------------------------
    def rng(self):
        """A fresh generator for the next case and the seed that reproduces it."""
        self.cases += 1
        key = (self.seed, self.cases)
        return key, self.np.random.default_rng(key)

    def put(self, host, dtype: str | None = None):
        """``host`` (numpy) in the backend's namespace, cast to ``dtype`` if given."""
        if dtype is not None:
            host = host.astype(dtype)
        a = self.be.asarray(host)
        if dtype is not None and a.dtype != getattr(self.xp, dtype):
            a = self.xp.astype(a, getattr(self.xp, dtype))
        return a

    def host(self, a):
        return to_numpy(a).astype(self.np.float64)

    def to_ref(self, *arrays):
        """The backend's arrays as inputs of the reference (moved if it has its own namespace)."""
        if not self.foreign_ref:
            return arrays
        return tuple(self.ref.asarray(to_numpy(a)) for a in arrays)

    # ---- verdicts ---------------------------------------------------------------------------
    def fail(self, kernel: str, case: str, message: str) -> None:
        self.failures.append(f"{kernel} [{case}]: {message}")

    def close(self, kernel: str, case: str, got, want, tol: float, what: str = "reference") -> None:
        np = self.np
        if got.shape != want.shape:
            self.fail(kernel, case, f"shape {got.shape} differs from the {what}'s {want.shape}")
            return
        if got.size == 0:
            return
        err = float(np.max(np.abs(got - want)))
        if not err <= tol:  # also catches NaN
            self.fail(kernel, case, f"max error {err:.3g} vs the {what} exceeds the tolerance "
                                    f"{tol:.3g}")

    def call(self, kernel: str, case: str, fn, inputs, *, shape, dtype):
        """Run ``fn()`` and check the rules every kernel keeps; the output on the host or None."""
        import array_api_compat as aac

        before = [to_numpy(a) for a in inputs]
        try:
            out = fn()
        except Exception as err:  # noqa: BLE001 - a raising kernel is a failure to report
            self.fail(kernel, case, f"raised {type(err).__name__}: {err}")
            return None
        x = inputs[0]
        try:
            ns = aac.array_namespace(out)
        except TypeError:
            self.fail(kernel, case, f"returned {type(out).__name__}, not an array of the input's "
                                    f"namespace {self.xp.__name__}")
            return None
        if ns is not aac.array_namespace(x):
            self.fail(kernel, case, f"returned an array of {ns.__name__} for input of "
                                    f"{aac.array_namespace(x).__name__}")
        if str(aac.device(out)) != str(aac.device(x)):
            self.fail(kernel, case, f"returned device {aac.device(out)} for input on "
                                    f"{aac.device(x)}")
        if out.dtype != dtype:
            self.fail(kernel, case, f"returned dtype {_dtype_name(out.dtype)}, expected "
                                    f"{_dtype_name(dtype)}")
        if tuple(out.shape) != tuple(shape):
            self.fail(kernel, case, f"returned shape {tuple(out.shape)}, expected {tuple(shape)}")
            return None
        for i, (b, a) in enumerate(zip(before, inputs)):
            if not self.np.array_equal(b, to_numpy(a), equal_nan=True):
                self.fail(kernel, case, f"modified its input #{i} (shape {b.shape}) in place")
        return self.host(out)

    def kernel_case(self, kernel, case, run, x_host, dtype, out_len, tol, extra=()):
        """Compare ``run(backend, x, *extra)`` with the reference's; also the batch-loop and the
        empty-batch rules when ``x_host`` has two batch axes. Returns (x, host output) or None."""
        np = self.np
        x = self.put(x_host, dtype)
        dt = getattr(self.xp, dtype)
        shape = (*x_host.shape[:-1], out_len)
        got = self.call(kernel, case, lambda: run(self.be, x, *extra), [x, *extra], shape=shape,
                        dtype=dt)
        if got is None:
            return None
        want = self.host(run(self.ref, *self.to_ref(x, *extra)))
        self.close(kernel, case, got, want, tol)
        if x_host.ndim == 3:  # leading batch axes must behave like a loop over them
            for idx in np.ndindex(*x_host.shape[:-1]):
                one = self.call(kernel, f"{case}, batch index {idx}",
                                lambda: run(self.be, x[(*idx, ...)], *extra),
                                [x[(*idx, ...)], *extra], shape=(out_len,), dtype=dt)
                if one is not None:
                    self.close(kernel, f"{case}, batch index {idx}", one, got[idx], tol,
                               "batched call")
            for empty in ((0, x_host.shape[-1]), (2, 0, x_host.shape[-1])):
                xe = self.put(np.zeros(empty), dtype)
                self.call(kernel, f"{case}, empty batch {empty}", lambda: run(self.be, xe, *extra),
                          [xe, *extra], shape=(*empty[:-1], out_len), dtype=dt)
        return x, got

    def raise_if_failed(self) -> int:
        """Raise one AssertionError listing the failures, the first few of each kernel."""
        if not self.failures:
            return self.cases
        groups: dict[str, list[str]] = {}
        for f in self.failures:
            groups.setdefault(f.split(" [", 1)[0], []).append(f)
        lines = []
        for kernel, fails in groups.items():
            lines.append(f"{kernel}: {len(fails)} failing case(s)")
            lines.extend(f"  {f}" for f in fails[:3])
            if len(fails) > 3:
                lines.append(f"  ... and {len(fails) - 3} more")
        raise AssertionError(
            f"backend {self.be.name!r} ({type(self.be).__name__}) fails {len(self.failures)} "
            f"conformance check(s) (seed={self.seed}; a case's seed (s, k) is "
            f"numpy.random.default_rng((s, k))):\n" + "\n".join(lines)
        )


# ---- kernels ----------------------------------------------------------------------------------
def _check_fwht(c: _Checker) -> None:
    np = c.np
    try:
        from scipy.linalg import hadamard as scipy_hadamard
    except ImportError:  # scipy is optional: the dense check is skipped without it
        scipy_hadamard = None
    for dtype in c.dtypes:
        rtol = RTOL[dtype]
        for n, batch in _FWHT_CASES:
            key, rng = c.rng()
            case = f"n={n}, batch={batch}, dtype={dtype}, seed={key}"
            x_host = rng.standard_normal((*batch, n)).astype(dtype)
            x64 = x_host.astype(np.float64)
            xmax = float(np.max(np.abs(x64))) if x64.size else 0.0
            # each output is a +-1 combination of the n inputs
            tol = _sum_tolerance(rtol, n, xmax)
            res = c.kernel_case("fwht", case, lambda be, x: be.fwht(x), x_host, dtype, n, tol)
            if res is None:
                continue
            x, y = res
            norms_x = np.linalg.norm(x64, axis=-1)
            norms_y = np.linalg.norm(y, axis=-1)
            # each y_i is ~ sqrt(n)|x| with an absolute error ~ eps sqrt(n)|x| (see tolerance), so
            # ||y|| carries a relative error ~ eps: rtol * sqrt(n) ||x|| bounds the deviation
            bad = np.abs(norms_y - math.sqrt(n) * norms_x) > rtol * math.sqrt(n) * norms_x + 1e-30
            if np.any(bad):
                dev = float(np.max(np.abs(norms_y / np.maximum(norms_x, 1e-30) - math.sqrt(n))))
                c.fail("fwht", case, f"Parseval: ||fwht(x)|| / ||x|| deviates from sqrt(n) by "
                                     f"{dev:.3g}")
            try:
                twice = c.host(c.be.fwht(c.be.fwht(x)))
            except Exception as err:  # noqa: BLE001
                c.fail("fwht", case, f"fwht(fwht(x)) raised {type(err).__name__}: {err}")
            else:
                ymax = float(np.max(np.abs(y))) if y.size else 0.0
                c.close("fwht", case + " (involution)", twice, n * x64,
                        2 * _sum_tolerance(rtol, n, ymax), "n * x")
            if scipy_hadamard is not None and n <= 1024:
                dense = x64 @ scipy_hadamard(n).astype(np.float64).T
                c.close("fwht", case, y, dense, tol, "scipy.linalg.hadamard(n) @ x")


def _random_plan(rng, sizes):
    """A KronPlan of ``sizes`` with random row/column permutations on some factors, possibly
    transposed; returns the plan and a description."""
    from ..kron_plans import KronPlan

    def perms():
        return [rng.permutation(s).astype("int64") if rng.random() < 0.6 else None for s in sizes]

    plan = KronPlan(sizes, row_perm=perms(), col_perm=perms())
    flip = bool(rng.random() < 0.3)
    if flip:
        plan = plan.transpose()
    rows = sum(p is not None for p in plan.row_perm)
    cols = sum(p is not None for p in plan.col_perm)
    return plan, f"sizes={sizes}, {rows} row perm(s), {cols} col perm(s), transposed={flip}"


def _composed_perm(np, sizes, perms):
    """The flat index map of per-factor permutations (identity where None), C order."""
    idx = np.zeros(1, dtype=np.int64)
    for size, p in zip(sizes, perms):
        p = np.arange(size) if p is None else np.asarray(p)
        idx = (idx[:, None] * size + p[None, :]).ravel()
    return idx


def _dense_plan_matrix(np, plan, transform):
    """The plan's whole matrix ``P T P'`` on the host (``transform(n)``: T as a dense matrix)."""
    rows = _composed_perm(np, plan.sizes, plan.row_perm)
    cols = _composed_perm(np, plan.sizes, plan.col_perm)
    return transform(plan.n)[rows, :][:, np.argsort(cols)]


def _check_transform(c: _Checker, kernel: str, sizes_list, transform, term_bound) -> None:
    """hadamard / hartley: the kernel with random plans, alternately with and without a
    diagonal (each dtype sees both on every plan size pattern's neighbours)."""
    np = c.np
    for k, dtype in enumerate(c.dtypes):
        rtol = RTOL[dtype]
        for i, sizes in enumerate(sizes_list):
            with_diag = (i + k) % 2 == 1
            key, rng = c.rng()
            plan, desc = _random_plan(rng, sizes)
            n = plan.n
            batch = (2, 3) if i == 2 else ((2,) if n <= 8192 else ())  # one case loops
            case = f"{desc}, diag={with_diag}, batch={batch}, dtype={dtype}, seed={key}"
            x_host = rng.standard_normal((*batch, n)).astype(dtype)
            d_host = rng.standard_normal(n).astype(dtype) if with_diag else None
            d = c.put(d_host, dtype) if with_diag else None
            dx = x_host.astype(np.float64) * (1.0 if d_host is None else d_host)
            bound = float(np.max(np.abs(dx))) if dx.size else 0.0
            # every entry of the plan's matrix is at most term_bound(n) in magnitude
            tol = _sum_tolerance(rtol, n, term_bound(n) * bound)

            def run(be, x, *d, _plan=plan):
                return getattr(be, kernel)(x, _plan, diag=d[0] if d else None)

            res = c.kernel_case(kernel, case, run, x_host, dtype, n, tol,
                                extra=() if d is None else (d,))
            if res is not None and n <= 1024:  # the dense matrix stays small
                dense = dx @ _dense_plan_matrix(np, plan, transform).T
                c.close(kernel, case, res[1], dense, tol, "dense matrix of the plan")


def _hadamard_matrix(size: int):
    import numpy as np

    h = np.ones((1, 1))
    while h.shape[0] < size:
        h = np.block([[h, h], [h, -h]])
    return h / math.sqrt(size)


def _hartley_matrix(size: int):
    import numpy as np

    k = np.arange(size)
    angle = 2 * np.pi * np.outer(k, k) / size
    return (np.cos(angle) + np.sin(angle)) / math.sqrt(size)


def _check_kron_matmul(c: _Checker) -> None:
    np = c.np
    for dtype in c.dtypes:
        rtol = RTOL[dtype]
        for i, shapes in enumerate(_KRON_SHAPES):
            key, rng = c.rng()
            n = math.prod(b for _, b in shapes)
            m = math.prod(d for d, _ in shapes)
            batch = (2, 3) if i == 2 else (2,)  # one case checks the batch loop
            case = f"factors={shapes}, batch={batch}, dtype={dtype}, seed={key}"
            f_host = [(rng.standard_normal(s) / math.sqrt(s[1])).astype(dtype) for s in shapes]
            factors = [c.put(f, dtype) for f in f_host]
            x_host = rng.standard_normal((*batch, n)).astype(dtype)
            bound = float(np.max(np.abs(x_host))) * math.prod(
                float(np.max(np.abs(f))) for f in f_host)
            tol = _sum_tolerance(rtol, n, bound)
            res = c.kernel_case("kron_matmul", case, lambda be, x, *f: be.kron_matmul(x, list(f)),
                                x_host, dtype, m, tol, extra=factors)
            if res is not None and n <= 1024:  # the dense product stays small
                dense = np.ones((1, 1))
                for f in f_host:
                    dense = np.kron(dense, f.astype(np.float64))
                c.close("kron_matmul", case, res[1], x_host.astype(np.float64) @ dense.T, tol,
                        "dense Kronecker product")


def _check_ell_matvec(c: _Checker) -> None:
    np = c.np
    for dtype in c.dtypes:
        rtol = RTOL[dtype]
        for i, (n, rows, slots) in enumerate(_ELL_SHAPES):
            key, rng = c.rng()
            batch = (2, 3) if i == 1 else (2,)  # one case checks the batch loop
            case = f"n={n}, rows={rows}, slots={slots}, batch={batch}, dtype={dtype}, seed={key}"
            idx_host = rng.integers(0, n, size=(rows, slots)).astype(np.int64)
            if slots > 1:  # duplicate indices within a row must add up
                idx_host[::2, 1] = idx_host[::2, 0]
            vals_host = rng.standard_normal((rows, slots)).astype(dtype)
            vals_host[1::3, -1] = 0  # padding slots carry value 0
            idx = c.put(idx_host)
            vals = c.put(vals_host, dtype)
            x_host = rng.standard_normal((*batch, n)).astype(dtype)
            bound = float(np.max(np.abs(x_host))) * float(np.max(np.abs(vals_host)))
            tol = _sum_tolerance(rtol, slots, bound)
            res = c.kernel_case("ell_matvec", case, lambda be, x, i, v: be.ell_matvec(x, i, v),
                                x_host, dtype, rows, tol, extra=(idx, vals))
            if res is not None:
                x64 = x_host.astype(np.float64)
                want = np.sum(x64[..., idx_host] * vals_host.astype(np.float64), axis=-1)
                c.close("ell_matvec", case, res[1], want, tol, "host sum")


# ---- sketches and dtype rules -----------------------------------------------------------------
def _check_sketches(c: _Checker) -> None:
    """Every algorithm x preconditioner through ``Sketch`` with this backend: equal to the
    reference backend, adjoint identity, batching (via the kernels) and empty batches."""
    np = c.np
    from ..api import Sketch

    for j, (algo, opts) in enumerate(algorithm_variants()):
        # the variants alternate between the two sizes (each size meets every kind of kernel)
        for in_dim, out_dim, extra in (_SKETCH_SIZES[j % len(_SKETCH_SIZES)],):
            options = dict(opts)
            if "preconditioner" in opts:
                options.update(extra)
            key, rng = c.rng()
            seed = int(rng.integers(0, 2**63))
            kernel = f"Sketch({algo})"
            desc = (f"algo={algo}, options={options}, in_dim={in_dim}, out_dim={out_dim}, "
                    f"batch=(3,), sketch seed={seed}, seed={key}")
            try:
                op = Sketch(algo=algo, in_dim=in_dim, out_dim=out_dim, seed=seed, **options)
            except Exception as err:  # noqa: BLE001 - e.g. a plugin algorithm's own limits
                c.fail(kernel, desc, f"could not build: {type(err).__name__}: {err}")
                continue
            for dtype in c.dtypes:
                rtol = RTOL[dtype]
                case = f"{desc}, dtype={dtype}"
                x_host = rng.standard_normal((3, in_dim)).astype(dtype)
                y_host = rng.standard_normal((3, out_dim)).astype(dtype)
                x, y = c.put(x_host, dtype), c.put(y_host, dtype)
                dt = getattr(c.xp, dtype)
                fx = c.call(kernel + ".apply", case, lambda: op.apply(x, backend=c.be), [x],
                            shape=(3, out_dim), dtype=dt)
                ty = c.call(kernel + ".transpose", case, lambda: op.transpose(y, backend=c.be),
                            [y], shape=(3, in_dim), dtype=dt)
                # Both directions are chains of orthogonal transforms, diagonals and sums whose
                # entries carry relative errors ~ eps * log2(n); scaled to the output's largest
                # entry, rtol covers them (sums over up to 5000 terms: see _sum_tolerance).
                if fx is not None:
                    want = c.host(op.apply(*c.to_ref(x), backend=c.ref))
                    c.close(kernel + ".apply", case, fx, want, rtol * float(np.max(np.abs(want))))
                if ty is not None:
                    want = c.host(op.transpose(*c.to_ref(y), backend=c.ref))
                    c.close(kernel + ".transpose", case, ty, want,
                            rtol * float(np.max(np.abs(want))))
                if fx is not None and ty is not None:
                    x64, y64 = x_host.astype(np.float64), y_host.astype(np.float64)
                    lhs = np.sum(fx * y64, axis=-1)
                    rhs = np.sum(x64 * ty, axis=-1)
                    # |<dPhi x, y>| <= ||dPhi x|| ||y|| (Cauchy-Schwarz) with ||dPhi x|| a few eps
                    # times ||Phi x||; the same holds for the other side.
                    scale = (np.linalg.norm(fx, axis=-1) * np.linalg.norm(y64, axis=-1)
                             + np.linalg.norm(x64, axis=-1) * np.linalg.norm(ty, axis=-1))
                    err = np.abs(lhs - rhs)
                    if not np.all(err <= rtol * scale):
                        c.fail(kernel + " adjoint identity", case, "<Phi x, y> = <x, Phi^T y>: max "
                                             f"error {float(np.max(err)):.3g} > tolerance "
                                             f"{float(np.min(rtol * scale)):.3g}")
                xe = c.put(np.zeros((0, in_dim)), dtype)
                c.call(kernel + ".apply", case + ", empty batch (0,)",
                       lambda: op.apply(xe, backend=c.be), [xe], shape=(0, out_dim), dtype=dt)


def _check_dtype_rules(c: _Checker) -> None:
    """Sketch inputs: float16/bfloat16 compute and return float32; integers are cast to the
    namespace's default float dtype (where the namespace has those dtypes)."""
    np = c.np
    from ..array_namespace import default_float
    from ..api import Sketch

    key, rng = c.rng()
    op = Sketch(algo="affd", in_dim=100, out_dim=32, seed=int(rng.integers(0, 2**63)))
    x_host = rng.standard_normal((2, 100)).astype(np.float32)
    f32 = c.xp.float32
    inputs = []
    for name in ("float16", "bfloat16"):
        dt = getattr(c.xp, name, None)
        if dt is None:
            continue
        try:
            low = c.xp.astype(c.put(x_host, "float32"), dt)
        except Exception:  # noqa: BLE001 - the namespace names the dtype but cannot make it
            continue
        inputs.append((name, low, f32, lambda a: c.xp.astype(a, f32)))
    ints = c.put(np.round(x_host * 10).astype(np.int32))
    default = default_float(c.xp)
    inputs.append(("int32", ints, default, lambda a: c.xp.astype(a, default)))
    for name, x, want_dtype, cast in inputs:
        case = f"affd in_dim=100 out_dim=32, input dtype={name}, seed={key}"
        got = c.call("Sketch(affd).apply", case, lambda: op.apply(x, backend=c.be), [x],
                     shape=(2, 32), dtype=want_dtype)
        if got is not None:
            want = c.host(op.apply(*c.to_ref(cast(x)), backend=c.ref))
            rtol = RTOL["float64" if want_dtype == getattr(c.xp, "float64", None) else "float32"]
            c.close("Sketch(affd).apply", case, got, want, rtol * float(np.max(np.abs(want))))


def _resolve(backend):
    from ..backend import Backend

    if isinstance(backend, str):
        from ..registry import registry

        return registry().backend(backend)
    if isinstance(backend, type) and issubclass(backend, Backend):
        backend = backend()
    if not isinstance(backend, Backend):
        raise TypeError(
            f"check_backend needs a registered backend name or a sketchcore.Backend instance, "
            f"got {backend!r}."
        )
    why = backend.check()
    if why is not None:
        from .._errors import BackendUnavailableError

        raise BackendUnavailableError(f"backend {backend.name!r} cannot run here: {why}")
    return backend


def check_backend(backend, *, seed: int = 0, reference=None) -> int:
    """Check every kernel contract of ``backend`` (a registered name or a ``Backend``).

    Compares each kernel with the reference kernels (by default ``Backend(xp)`` on the backend's
    own namespace ``xp``; ``reference=sketchcore.Backend(array_api_compat.numpy)`` runs them on
    host copies instead, which is faster for namespaces whose eager mode compiles every new
    shape) on seeded random inputs (``seed``), checks the FWHT's algebra, the dtype, batching,
    empty-batch and no-aliasing rules, and every algorithm x preconditioner applied with the
    backend (reference equality and the adjoint identity). Raises ``AssertionError`` listing
    every failing kernel and case, or ``BackendUnavailableError`` if the backend cannot run here.
    Returns the number of cases run.
    """
    be = _resolve(backend)
    c = _Checker(be, seed, reference)
    _check_fwht(c)
    _check_transform(c, "hadamard", _HADAMARD_SIZES, _hadamard_matrix,
                     lambda n: 1.0 / math.sqrt(n))
    # |cas| <= sqrt(2): each output term is at most sqrt(2/n) |x_j|
    _check_transform(c, "hartley", _HARTLEY_SIZES, _hartley_matrix,
                     lambda n: math.sqrt(2.0 / n))
    _check_kron_matmul(c)
    _check_ell_matvec(c)
    _check_sketches(c)
    _check_dtype_rules(c)
    return c.raise_if_failed()
