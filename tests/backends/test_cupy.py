"""The cupy backend.

Always run: importing the plugin does not import cupy; ``check()`` gives a clear reason where no
GPU exists; the CUDA source is well formed (and compiles with nvcc to PTX without register spills
where nvcc is installed); the host-side schedules and the launch sequence, driven through numpy
emulations that mirror the kernels' index arithmetic thread by thread, equal the reference
Hadamard transform. With a CUDA device: the compiled kernels equal the reference kernels, and
``check_backend("cupy")`` passes.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys

import array_api_compat.numpy as anp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sketchcore as sk
from sketchcore_cupy import _fwht_kernel as K
from sketchcore_cupy._launch import DeviceSchedule, run_schedule
from sketchcore_cupy._layout import composed_perm, schedule_for
from sketchcore_cupy.backend import CupyBackend

REFERENCE = sk.Backend(anp)


def _gpu_available() -> bool:
    try:
        import cupy
    except Exception:  # noqa: BLE001
        return False
    return bool(cupy.cuda.is_available())


GPU = _gpu_available()
needs_gpu = pytest.mark.skipif(not GPU, reason=f"no CUDA device: {CupyBackend().check()}")


# ---- always ---------------------------------------------------------------------------------
def test_importing_the_plugin_does_not_import_cupy():
    code = ("import sys, sketchcore_cupy\n"
            "assert 'cupy' not in sys.modules, 'cupy imported'\n"
            "assert sketchcore_cupy.CupyBackend.name == 'cupy'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_check_gives_a_clear_reason_without_a_gpu():
    reason = CupyBackend().check()
    if GPU:
        assert reason is None
    else:
        assert reason is not None
        assert reason.startswith(("no CUDA device", "cupy is not importable"))
        info = {b.name: b for b in sk.backends()}["cupy"]
        assert not info.usable and info.reason == reason and info.priority == 10


def test_owns_only_cupy_arrays_and_names_its_namespace():
    be = CupyBackend()
    assert not be.owns(np.zeros(3)) and be.array_module == "cupy" and be.name == "cupy"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_source_is_well_formed(dtype):
    src = K.source(dtype)
    code = re.sub(r"//[^\n]*", "", src)
    for open_, close in ("{}", "()", "[]"):
        depth = 0
        for ch in code:
            depth += (ch == open_) - (ch == close)
            assert depth >= 0, f"unbalanced {open_}{close}"
        assert depth == 0, f"unbalanced {open_}{close}"
    defined = set(re.findall(r'extern "C" __global__ void(?: __launch_bounds__\(\w+\))?\s+(\w+)\(',
                             code))
    assert defined == set(K.KERNEL_NAMES)
    launched = {"fwht_tile"} | {f"fwht_radix{1 << r}" for r in K.RADIX_LOG2}
    assert launched <= defined
    assert "__LOG_" not in src  # every placeholder was filled
    assert code.count("__syncthreads()") == 3


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed here")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_source_compiles_to_ptx_without_spills(dtype, tmp_path):
    cu = tmp_path / f"fwht_{dtype}.cu"
    cu.write_text(K.source(dtype))
    ptx = tmp_path / "fwht.ptx"
    subprocess.run(["nvcc", "-std=c++14", "-ptx", "-arch=sm_80", str(cu), "-o", str(ptx)],
                   check=True, timeout=120, capture_output=True)
    text = ptx.read_text()
    for name in K.KERNEL_NAMES:
        assert f".entry {name}(" in text
    if shutil.which("ptxas"):
        out = subprocess.run(["ptxas", "-arch=sm_80", "-v", str(ptx), "-o",
                              str(tmp_path / "fwht.cubin")],
                             check=True, timeout=120, capture_output=True, text=True).stderr
        assert "spill" in out and not re.search(r"[1-9]\d* bytes spill", out), out
        assert "16384 bytes smem" in out


def test_schedule_cuts_at_factor_boundaries():
    perm = np.arange(16)[::-1]
    # everything fits one float32 tile: one launch
    s = schedule_for((4, 8), (None, None), (None, None), 12)
    assert (s.log_seg, s.radix, s.src_seg, s.inv_col) == (5, (), None, None)
    # an unpermuted big factor may be cut anywhere: tile 2^12, then radix 8 and 2
    s = schedule_for((1 << 16,), (None,), (None,), 12)
    assert (s.log_seg, s.radix) == (12, ((12, 3), (15, 1)))
    # a permuted low factor of 16 under an unpermuted 2048: cut at the tile, perm inside it
    s = schedule_for((2048, 16), (None, perm), (None, None), 12)
    assert s.log_seg == 12 and s.row_lo is not None and s.inv_row_hi is None
    # a permuted 2048 over 16: the only clean cut (bit 4) is below a warp: unfused path
    assert schedule_for((2048, 16), (np.arange(2048), None), (None, None), 12) is None
    # non-powers of two never fuse
    assert schedule_for((3, 5), (None, None), (None, None), 12) is None


# ---- numpy emulations of the kernels (same index arithmetic, thread by thread) ----------------
def _emulate_tile(dtype):
    log_t, log_nt = K.TILE_LOG2[dtype], K.LOG_THREADS
    log_vw = 2 if dtype == "float32" else 1
    T, NT, VW = 1 << log_t, 1 << log_nt, 1 << log_vw
    log_e = log_t - log_nt
    E, log_w = 1 << log_e, log_nt - 5
    tid = np.arange(NT)
    lane, warp = tid & 31, tid >> 5
    k = np.arange(E)
    idx_a = (warp[:, None] << (5 + log_e)) | (k[None, :] << 5) | lane[:, None]
    idx_b = (k[None, :] << (5 + log_w)) | (warp[:, None] << 5) | lane[:, None]

    def register_stage(r, h):
        for kk in range(E):
            if kk & h == 0:
                u, v = r[:, kk].copy(), r[:, kk + h].copy()
                r[:, kk], r[:, kk + h] = u + v, u - v

    def tile(grid, block, args):
        x, y, diag, src_seg, inv_col, row_lo, total, log_n, log_seg, scale = args
        assert block == (NT,) and x.dtype == y.dtype == np.dtype(dtype)
        assert isinstance(total, np.int64) and isinstance(log_n, np.int32)
        assert isinstance(scale, np.float32 if dtype == "float32" else np.float64)
        xf, yf = x.reshape(-1), y.reshape(-1)
        total, log_n, log_seg = int(total), int(log_n), int(log_seg)
        n, seg = 1 << log_n, 1 << log_seg
        e = np.arange(0, T, VW)
        q = np.arange(VW)
        for blk in range(grid[0]):
            s = np.zeros(T, dtype=x.dtype)
            g = blk * T + e
            full = g + VW <= total
            p = np.zeros((e.size, VW), dtype=x.dtype)
            src = g.copy()
            if src_seg is not None:
                row0 = g & ~(n - 1)
                src = row0 + (src_seg[(g & (n - 1)) >> log_seg].astype(np.int64) << log_seg) \
                    + (g & (seg - 1))
            fs = src[full]
            p[full] = xf[fs[:, None] + q]
            if diag is not None:
                pos = fs & (n - 1)
                d = diag[pos[:, None] + q] if n >= VW else diag[(pos[:, None] + q) & (n - 1)]
                p[full] *= d
            p[full] *= scale
            for i in np.flatnonzero(~full):  # the ragged end: scalar loads
                for qq in range(VW):
                    gq = g[i] + qq
                    v = 0
                    if gq < total:
                        v = xf[gq] * scale
                        if diag is not None:
                            v *= diag[gq & (n - 1)]
                    p[i, qq] = v
            if inv_col is not None:
                base, lo = e & ~(seg - 1), e & (seg - 1)
                s[base[:, None] + inv_col[lo[:, None] + q]] = p
            else:
                s[e[:, None] + q] = p
            r = s[idx_a]
            for b in range(5):
                if b < log_seg:
                    h = 1 << b
                    o = r[tid ^ h]
                    r = np.where(((lane & h) != 0)[:, None], o - r, r + o)
            for b in range(log_e):
                if 5 + b < log_seg:
                    register_stage(r, 1 << b)
            s[idx_a] = r
            if log_seg > 5 + log_e:
                r = s[idx_b]
                for b in range(log_e - log_w, log_e):
                    if 5 + log_w + b < log_seg:
                        register_stage(r, 1 << b)
                s[idx_b] = r
            if row_lo is not None:
                base, lo = e & ~(seg - 1), e & (seg - 1)
                out = s[base[:, None] + row_lo[lo[:, None] + q]]
            else:
                out = s[e[:, None] + q]
            dest = g[:, None] + q
            keep = dest < total
            yf[dest[keep]] = out[keep]

    return tile


def _emulate_radix(dtype, log_r):
    log_vw = 2 if dtype == "float32" else 1
    VW, R = 1 << log_vw, 1 << log_r

    def radix(grid, block, args):
        x, y, inv_row_hi, items, log_n, log_h, log_seg = args
        assert block == (K.RADIX_THREADS,) and grid[0] * block[0] >= int(items)
        items, log_n, log_h, log_seg = int(items), int(log_n), int(log_h), int(log_seg)
        assert (inv_row_hi is None) or (x is not y)
        xf, yf = x.reshape(-1), y.reshape(-1)
        qi = np.arange(items)
        lir = log_n - log_r - log_vw
        row0 = (qi >> lir) << log_n
        w = (qi & ((1 << lir) - 1)) << log_vw
        h = 1 << log_h
        base = ((w >> log_h) << (log_h + log_r)) | (w & (h - 1))
        m = np.arange(R)
        c = np.arange(VW)
        a = xf[(row0 + base)[:, None, None] + (m * h)[None, :, None] + c[None, None, :]].copy()
        for b in range(log_r):
            d = 1 << b
            for mm in range(R):
                if mm & d == 0:
                    u, v = a[:, mm].copy(), a[:, mm + d].copy()
                    a[:, mm], a[:, mm + d] = u + v, u - v
        pos = base[:, None] + (m * h)[None, :]
        if inv_row_hi is not None:
            lo = pos & ((1 << log_seg) - 1)
            pos = (inv_row_hi[pos >> log_seg].astype(np.int64) << log_seg) | lo
        yf[(row0[:, None, None] + pos[:, :, None]) + c[None, None, :]] = a

    return radix


def _emulated_launch(dtype):
    table = {"fwht_tile": _emulate_tile(dtype)}
    for r in K.RADIX_LOG2:
        table[f"fwht_radix{1 << r}"] = _emulate_radix(dtype, r)
    return table


def _host_schedule(sched):
    return DeviceSchedule(sched, sched.src_seg, sched.inv_col, sched.row_lo, sched.inv_row_hi)


_SIZES = [(1,), (2,), (4,), (32,), (4, 8), (2, 16, 4), (64, 64), (1024, 4), (64, 128),
          (256, 64, 4), (16, 1024, 2), (2048, 32), (1 << 14,), (1 << 16,)]


@given(
    sizes=st.sampled_from(_SIZES),
    dtype=st.sampled_from(["float32", "float64"]),
    rows=st.sampled_from([1, 3]),
    with_diag=st.booleans(),
    data=st.data(),
)
def test_emulated_kernels_equal_the_reference_hadamard(sizes, dtype, rows, with_diag, data):
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)

    def perms():
        return [rng.permutation(s) if data.draw(st.booleans()) else None for s in sizes]

    plan = sk.KronPlan(sizes, row_perm=perms(), col_perm=perms())
    if data.draw(st.booleans(), label="transposed"):
        plan = plan.transpose()
    sched = schedule_for(plan.sizes, plan.row_perm, plan.col_perm, K.TILE_LOG2[dtype])
    if sched is None:  # the backend takes the unfused path: covered on a GPU only
        return
    n = plan.n
    x = rng.standard_normal((rows, n)).astype(dtype)
    d = rng.standard_normal(n).astype(dtype) if with_diag else None
    got = run_schedule(x.copy(), _host_schedule(sched), d, 1.0 / math.sqrt(n),
                       launch=_emulated_launch(dtype))
    want = REFERENCE.hadamard(x, plan, diag=d)
    tol = (1e-5 if dtype == "float32" else 1e-12) * float(np.max(np.abs(x))) * (
        1.0 if d is None else float(np.max(np.abs(d))))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize("sizes,cut", [
    ((4, 8), 5),                 # one tile, both factors permuted
    ((64, 128), 7),              # two tiles' worth: the permuted 64 sits above bit 7
    ((256, 64, 4), 8),           # three factors, high part permuted
    ((2048, 32), 5),             # a permuted factor of 32 under a permuted 2048: cut at bit 5
    ((16, 1024, 2), 11),         # the cut between 1024 and 16
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_emulated_kernels_on_fully_permuted_plans(sizes, cut, dtype):
    rng = np.random.default_rng(len(sizes))
    plan = sk.KronPlan(sizes, row_perm=[rng.permutation(s) for s in sizes],
                       col_perm=[rng.permutation(s) for s in sizes])
    sched = schedule_for(plan.sizes, plan.row_perm, plan.col_perm, K.TILE_LOG2[dtype])
    assert sched is not None and sched.log_seg == cut
    x = rng.standard_normal((3, plan.n)).astype(dtype)
    d = rng.standard_normal(plan.n).astype(dtype)
    got = run_schedule(x, _host_schedule(sched), d, 1.0 / math.sqrt(plan.n),
                       launch=_emulated_launch(dtype))
    tol = (1e-5 if dtype == "float32" else 1e-12) * float(np.max(np.abs(x * d)))
    np.testing.assert_allclose(got, REFERENCE.hadamard(x, plan, diag=d), rtol=0, atol=tol)
    np.testing.assert_allclose(
        run_schedule(x, _host_schedule(schedule_for(
            plan.transpose().sizes, plan.transpose().row_perm, plan.transpose().col_perm,
            K.TILE_LOG2[dtype])), None, 1.0 / math.sqrt(plan.n), launch=_emulated_launch(dtype)),
        REFERENCE.hadamard(x, plan.transpose()), rtol=0, atol=tol)


@pytest.mark.parametrize("n", [1, 2, 8, 64, 4096, 1 << 13, 1 << 15])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_emulated_plain_fwht_equals_the_reference(n, dtype):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, n)).astype(dtype)
    sched = schedule_for((n,), (None,), (None,), K.TILE_LOG2[dtype])
    got = run_schedule(x, _host_schedule(sched), None, 1.0, launch=_emulated_launch(dtype))
    tol = (1e-5 if dtype == "float32" else 1e-12) * math.sqrt(n) * float(np.max(np.abs(x)))
    np.testing.assert_allclose(got, REFERENCE.fwht(x), rtol=0, atol=tol)


def test_composed_perm_matches_take_factors():
    rng = np.random.default_rng(0)
    sizes = (4, 2, 8)
    perms = [rng.permutation(4), None, rng.permutation(8)]
    x = np.arange(64.0)
    want = sk.kernels.take_factors(anp, x, sizes, perms)
    np.testing.assert_array_equal(x[composed_perm(sizes, perms)], want)


# ---- with a GPU -----------------------------------------------------------------------------
@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_kernels_equal_the_reference(dtype):
    import cupy

    be = CupyBackend()
    rng = np.random.default_rng(1)
    for sizes in _SIZES + [(2048, 16)]:  # (2048, 16) fully permuted: the unfused path
        for transposed in (False, True):
            plan = sk.KronPlan(sizes, row_perm=[rng.permutation(s) for s in sizes],
                               col_perm=[rng.permutation(s) for s in sizes])
            plan = plan.transpose() if transposed else plan
            x = rng.standard_normal((3, plan.n)).astype(dtype)
            d = rng.standard_normal(plan.n).astype(dtype)
            got = cupy.asnumpy(be.hadamard(cupy.asarray(x), plan, diag=cupy.asarray(d)))
            want = REFERENCE.hadamard(x, plan, diag=d)
            tol = (1e-5 if dtype == "float32" else 1e-12) * float(np.max(np.abs(x * d)))
            np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=f"{sizes}")
    for n in (1, 2, 4, 64, 4096, 1 << 13, 1 << 20):
        x = rng.standard_normal((2, n)).astype(dtype)
        xc = cupy.asarray(x)
        got = cupy.asnumpy(be.fwht(xc))
        tol = (1e-5 if dtype == "float32" else 1e-12) * math.sqrt(n) * float(np.max(np.abs(x)))
        np.testing.assert_allclose(got, REFERENCE.fwht(x), rtol=0, atol=tol, err_msg=f"n={n}")
        np.testing.assert_array_equal(cupy.asnumpy(xc), x)  # the input is untouched
    # a contiguous view that starts 4 bytes past an allocation: not 16-byte aligned
    x = rng.standard_normal(4097).astype(dtype)
    view = cupy.asarray(x)[1:].reshape(1, 4096)
    np.testing.assert_allclose(cupy.asnumpy(be.fwht(view)), REFERENCE.fwht(x[1:].reshape(1, -1)),
                               rtol=0, atol=1e-3 if dtype == "float32" else 1e-9)


@needs_gpu
@pytest.mark.gpu
def test_gpu_backend_conforms():
    from sketchcore.testing import check_backend

    assert check_backend("cupy") > 50
