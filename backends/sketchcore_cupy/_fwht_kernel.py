"""CUDA source of the fused Walsh-Hadamard kernels (compiled at run time by NVRTC via cupy).

Two kinds of kernels, one module per dtype (the macros at the top pick float/float4 or
double/double2; every global access is a 16-byte vector):

* ``fwht_tile``: one block per tile of ``T`` consecutive elements (4096 floats or 2048 doubles,
  16 KiB of shared memory), split into segments of ``seg = 2^log_seg`` elements; it runs every
  butterfly stage with ``h < seg`` in one launch. The load fuses the diagonal, the scaling, the
  gather of whole segments by the plan's high column permutation (``src_seg``: coalesced, a
  segment is contiguous) and the low column permutation (``inv_col``: a scatter into shared
  memory); the store fuses the low row permutation (``row_lo``: a gather from shared memory).
  Stages on bits 0-4 exchange values between lanes with ``__shfl_xor_sync`` (no shared memory),
  the next ``LOG_E`` stages run in registers (layout A: a thread holds 32-strided elements), the
  remaining ones after one transpose through shared memory (layout B: a thread holds elements
  ``32 * warps`` apart). Every shared-memory access of the layouts touches 32 consecutive words
  per warp: no bank conflicts; the permutation gathers/scatters are the only conflicting ones.
* ``fwht_radix2/4/8``: the stages with ``h >= seg``, three at a time: each thread loads ``R``
  vectors ``h`` apart, does a radix-``R`` butterfly in registers and stores them, the last launch
  scattering whole segments by the inverse high row permutation (``inv_row_hi``).

Sylvester order throughout: the stage on bit ``b`` maps ``(u, v) -> (u + v, u - v)`` for the pair
of elements whose indices differ only in bit ``b``.
"""

from __future__ import annotations

__all__ = ["KERNEL_NAMES", "LOG_THREADS", "TILE_LOG2", "RADIX_LOG2", "RADIX_THREADS", "source"]

LOG_THREADS = 8  # 256 threads per tile block (8 warps)
TILE_LOG2 = {"float32": 12, "float64": 11}  # 16 KiB of shared memory either way
RADIX_LOG2 = (1, 2, 3)
RADIX_THREADS = 256
KERNEL_NAMES = ("fwht_tile", "fwht_radix2", "fwht_radix4", "fwht_radix8")

_PREAMBLE = {
    "float32": "#define SCALAR float\n#define VEC float4\n#define LOG_VW 2\n",
    "float64": "#define SCALAR double\n#define VEC double2\n#define LOG_VW 1\n",
}

_BODY = r"""
#define LOG_T __LOG_T__
#define LOG_NT __LOG_NT__
#define T (1 << LOG_T)
#define NT (1 << LOG_NT)
#define VW (1 << LOG_VW)
#define LOG_E (LOG_T - LOG_NT)
#define E (1 << LOG_E)
#define LOG_W (LOG_NT - 5)
#if LOG_E < LOG_W
#error "layout B needs at least as many elements per thread as warps per block"
#endif

union Pack {
    VEC v;
    SCALAR s[VW];
};

// Tile kernel. x, y: (rows, n) contiguous and 16-byte aligned; total = rows * n elements.
// diag (n), src_seg (n >> log_seg), inv_col (seg), row_lo (seg) may each be null.
extern "C" __global__ void __launch_bounds__(NT)
fwht_tile(const SCALAR* __restrict__ x, SCALAR* __restrict__ y,
          const SCALAR* __restrict__ diag, const int* __restrict__ src_seg,
          const int* __restrict__ inv_col, const int* __restrict__ row_lo,
          long long total, int log_n, int log_seg, SCALAR scale)
{
    __shared__ __align__(16) SCALAR s[T];
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int seg = 1 << log_seg;               // log_seg <= LOG_T
    const long long n = 1LL << log_n;
    const long long tile0 = (long long)blockIdx.x << LOG_T;

    // 1. load: 16-byte vectors, coalesced; diagonal, scale and column gathers fused
    for (int e = tid << LOG_VW; e < T; e += NT << LOG_VW) {
        const long long g = tile0 + e;          // destination element (flat over rows * n)
        Pack p;
        if (g + VW <= total) {
            long long src = g;
            if (src_seg != nullptr) {           // the segment comes from another segment of its row
                const long long row0 = g & ~(n - 1);
                const long long j_hi = (g & (n - 1)) >> log_seg;
                src = row0 + ((long long)src_seg[j_hi] << log_seg) + (g & (seg - 1));
            }
            p.v = *reinterpret_cast<const VEC*>(x + src);
            if (diag != nullptr) {
                const long long pos = src & (n - 1);
                if (n >= VW) {
                    Pack d;
                    d.v = *reinterpret_cast<const VEC*>(diag + pos);
#pragma unroll
                    for (int q = 0; q < VW; ++q) p.s[q] *= d.s[q];
                } else {
#pragma unroll
                    for (int q = 0; q < VW; ++q) p.s[q] *= diag[(pos + q) & (n - 1)];
                }
            }
#pragma unroll
            for (int q = 0; q < VW; ++q) p.s[q] *= scale;
        } else {
            // the ragged end (only when n < VW, so there is no segment gather): scalar loads
#pragma unroll
            for (int q = 0; q < VW; ++q) {
                const long long gq = g + q;
                SCALAR v = 0;
                if (gq < total) {
                    v = x[gq] * scale;
                    if (diag != nullptr) v *= diag[gq & (n - 1)];
                }
                p.s[q] = v;
            }
        }
        if (inv_col != nullptr) {               // gather inside the segment, as a scatter into smem
            const int base = e & ~(seg - 1);
            const int lo = e & (seg - 1);       // source and destination share their low bits
#pragma unroll
            for (int q = 0; q < VW; ++q) s[base + inv_col[lo + q]] = p.s[q];
        } else {
            *reinterpret_cast<VEC*>(s + e) = p.v;
        }
    }
    __syncthreads();

    // 2. layout A: element (warp << (5 + LOG_E)) | (k << 5) | lane sits in register k of a thread
    SCALAR r[E];
#pragma unroll
    for (int k = 0; k < E; ++k) r[k] = s[(warp << (5 + LOG_E)) | (k << 5) | lane];
#pragma unroll
    for (int b = 0; b < 5; ++b) {               // bits 0-4: the partner is lane ^ h
        if (b < log_seg) {                      // uniform over the block: every lane shuffles
            const int h = 1 << b;
            const bool upper = (lane & h) != 0;
#pragma unroll
            for (int k = 0; k < E; ++k) {
                const SCALAR o = __shfl_xor_sync(0xffffffffu, r[k], h);
                r[k] = upper ? o - r[k] : r[k] + o;
            }
        }
    }
#pragma unroll
    for (int b = 0; b < LOG_E; ++b) {           // bits 5 .. 4 + LOG_E: register pairs k, k + h
        if (5 + b < log_seg) {
            const int h = 1 << b;
#pragma unroll
            for (int k = 0; k < E; ++k) {
                if ((k & h) == 0) {
                    const SCALAR u = r[k], v = r[k + h];
                    r[k] = u + v;
                    r[k + h] = u - v;
                }
            }
        }
    }
    // each thread writes back exactly the words it read: no barrier needed before this
#pragma unroll
    for (int k = 0; k < E; ++k) s[(warp << (5 + LOG_E)) | (k << 5) | lane] = r[k];
    __syncthreads();

    // 3. layout B: element (k << (5 + LOG_W)) | (warp << 5) | lane in register k; the bits
    //    5 + LOG_E .. LOG_T - 1 are now register bits LOG_E - LOG_W .. LOG_E - 1
    if (log_seg > 5 + LOG_E) {                  // uniform over the block: barriers are safe
#pragma unroll
        for (int k = 0; k < E; ++k) r[k] = s[(k << (5 + LOG_W)) | (warp << 5) | lane];
#pragma unroll
        for (int b = LOG_E - LOG_W; b < LOG_E; ++b) {
            if (5 + LOG_W + b < log_seg) {
                const int h = 1 << b;
#pragma unroll
                for (int k = 0; k < E; ++k) {
                    if ((k & h) == 0) {
                        const SCALAR u = r[k], v = r[k + h];
                        r[k] = u + v;
                        r[k + h] = u - v;
                    }
                }
            }
        }
#pragma unroll
        for (int k = 0; k < E; ++k) s[(k << (5 + LOG_W)) | (warp << 5) | lane] = r[k];
        __syncthreads();
    }

    // 4. store: 16-byte vectors, coalesced; the low row gather reads shared memory
    for (int e = tid << LOG_VW; e < T; e += NT << LOG_VW) {
        const long long g = tile0 + e;
        Pack p;
        if (row_lo != nullptr) {
            const int base = e & ~(seg - 1);
            const int lo = e & (seg - 1);
#pragma unroll
            for (int q = 0; q < VW; ++q) p.s[q] = s[base + row_lo[lo + q]];
        } else {
            p.v = *reinterpret_cast<const VEC*>(s + e);
        }
        if (g + VW <= total) {
            *reinterpret_cast<VEC*>(y + g) = p.v;
        } else {
#pragma unroll
            for (int q = 0; q < VW; ++q) {
                if (g + q < total) y[g + q] = p.s[q];
            }
        }
    }
}

// Radix kernels: the stages on bits log_h .. log_h + LOG_R - 1 (h >= seg >= VW). Thread q
// handles VW consecutive butterfly bases of one row. x may equal y (no __restrict__): a thread
// reads all its R vectors before it writes them, and no other thread touches them. With
// inv_row_hi (last launch only, x != y) segment j of the result goes to segment inv_row_hi[j].
template <int LOG_R>
__device__ __forceinline__ void radix_pass(const SCALAR* x, SCALAR* y,
                                           const int* __restrict__ inv_row_hi,
                                           long long items, int log_n, int log_h, int log_seg)
{
    constexpr int R = 1 << LOG_R;
    const long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= items) return;                     // no barriers or shuffles below
    const int log_items_row = log_n - LOG_R - LOG_VW;
    const long long row0 = (q >> log_items_row) << log_n;
    const long long w = (q & ((1LL << log_items_row) - 1)) << LOG_VW;
    const long long h = 1LL << log_h;
    const long long base = ((w >> log_h) << (log_h + LOG_R)) | (w & (h - 1));
    Pack a[R];
#pragma unroll
    for (int m = 0; m < R; ++m) a[m].v = *reinterpret_cast<const VEC*>(x + row0 + base + m * h);
#pragma unroll
    for (int b = 0; b < LOG_R; ++b) {
        const int d = 1 << b;
#pragma unroll
        for (int m = 0; m < R; ++m) {
            if ((m & d) == 0) {
#pragma unroll
                for (int c = 0; c < VW; ++c) {
                    const SCALAR u = a[m].s[c], v = a[m + d].s[c];
                    a[m].s[c] = u + v;
                    a[m + d].s[c] = u - v;
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < R; ++m) {
        long long pos = base + m * h;
        if (inv_row_hi != nullptr) {
            const long long lo = pos & ((1LL << log_seg) - 1);
            pos = ((long long)inv_row_hi[pos >> log_seg] << log_seg) | lo;
        }
        *reinterpret_cast<VEC*>(y + row0 + pos) = a[m].v;
    }
}

extern "C" __global__ void __launch_bounds__(256)
fwht_radix2(const SCALAR* x, SCALAR* y, const int* __restrict__ inv_row_hi, long long items,
            int log_n, int log_h, int log_seg)
{
    radix_pass<1>(x, y, inv_row_hi, items, log_n, log_h, log_seg);
}

extern "C" __global__ void __launch_bounds__(256)
fwht_radix4(const SCALAR* x, SCALAR* y, const int* __restrict__ inv_row_hi, long long items,
            int log_n, int log_h, int log_seg)
{
    radix_pass<2>(x, y, inv_row_hi, items, log_n, log_h, log_seg);
}

extern "C" __global__ void __launch_bounds__(256)
fwht_radix8(const SCALAR* x, SCALAR* y, const int* __restrict__ inv_row_hi, long long items,
            int log_n, int log_h, int log_seg)
{
    radix_pass<3>(x, y, inv_row_hi, items, log_n, log_h, log_seg);
}
"""


def source(dtype: str) -> str:
    """The CUDA source of the kernels for ``dtype`` ("float32" or "float64")."""
    if dtype not in _PREAMBLE:
        raise ValueError(f"the CUDA FWHT has float32 and float64 variants, not {dtype!r}.")
    body = _BODY.replace("__LOG_T__", str(TILE_LOG2[dtype])).replace("__LOG_NT__", str(LOG_THREADS))
    return _PREAMBLE[dtype] + body
