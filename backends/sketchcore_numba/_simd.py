"""Walsh-Hadamard butterflies on whole SIMD vectors, written as numba intrinsics.

A radix-8 butterfly reads eight rows of a buffer that lie ``s`` elements apart and writes them
back. LLVM does not vectorize that loop by itself: the eight loads and eight stores hit one array
at a run-time distance, which needs more pointer-overlap checks than its vectorizer allows, so it
stays scalar. These intrinsics emit the vector loads, adds and stores directly. One call works on
``lanes`` consecutive elements (64 bytes: 16 float32 or 8 float64; LLVM splits the vectors where
the CPU's registers are narrower), so callers step through columns ``lanes`` at a time.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = [
    "VECTOR_BYTES", "bfly8", "bfly4", "bfly2", "bfly_lanes", "vcopy", "vscale", "vscale_diag",
]

#: bytes each vector operation covers (one cache line, one AVX-512 register)
VECTOR_BYTES = 64


def _float_array(buf) -> bool:
    return isinstance(buf, types.Array) and buf.dtype in (types.float32, types.float64)


def _lanes(dtype) -> int:
    return VECTOR_BYTES * 8 // dtype.bitwidth


def _vector_ptrs(context, builder, arr_t, arr_v, offsets, lanes):
    arr = context.make_array(arr_t)(context, builder, value=arr_v)
    vec_t = ir.VectorType(context.get_value_type(arr_t.dtype), lanes)
    return [builder.bitcast(builder.gep(arr.data, [off]), vec_t.as_pointer()) for off in offsets]


def _radix(k: int):
    """An intrinsic ``bfly{k}(buf, i0, s)``: the ``log2 k`` butterfly stages that combine the ``k``
    vectors ``buf[i0 + j*s : i0 + j*s + lanes]`` (j = 0..k-1), in place; ``buf`` is 1-D C-order."""

    @intrinsic
    def bfly(typingctx, buf, i0, s):
        if not _float_array(buf):
            return None
        lanes = _lanes(buf.dtype)
        sig = types.void(buf, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            arr_t, i0_t, s_t = signature.args
            i0 = context.cast(builder, args[1], i0_t, types.intp)
            s = context.cast(builder, args[2], s_t, types.intp)
            offsets = [builder.add(i0, builder.mul(s, ir.Constant(s.type, j))) for j in range(k)]
            ptrs = _vector_ptrs(context, builder, arr_t, args[0], offsets, lanes)
            align = arr_t.dtype.bitwidth // 8
            v = [builder.load(p, align=align) for p in ptrs]
            h = 1
            while h < k:
                w = list(v)
                for base in range(0, k, 2 * h):
                    for j in range(base, base + h):
                        w[j] = builder.fadd(v[j], v[j + h])
                        w[j + h] = builder.fsub(v[j], v[j + h])
                v = w
                h *= 2
            for p, val in zip(ptrs, v):
                builder.store(val, p, align=align)
            return context.get_dummy_value()

        return sig, codegen

    return bfly


bfly8 = _radix(8)
bfly4 = _radix(4)
bfly2 = _radix(2)


@intrinsic
def bfly_lanes(typingctx, buf, i0):
    """The full Walsh-Hadamard transform of the ``lanes`` elements ``buf[i0 : i0 + lanes]``
    inside one register: per stage h, ``out = swap_h(v) + sign_h * v`` with ``swap_h`` the lane
    shuffle ``i -> i ^ h`` and ``sign_h`` = +1 where bit h of the lane is clear, else -1."""
    if not _float_array(buf):
        return None
    lanes = _lanes(buf.dtype)
    sig = types.void(buf, types.intp)

    def codegen(context, builder, signature, args):
        arr_t, i0_t = signature.args
        i0 = context.cast(builder, args[1], i0_t, types.intp)
        (ptr,) = _vector_ptrs(context, builder, arr_t, args[0], [i0], lanes)
        elem_t = context.get_value_type(arr_t.dtype)
        align = arr_t.dtype.bitwidth // 8
        v = builder.load(ptr, align=align)
        i32 = ir.IntType(32)
        h = 1
        while h < lanes:
            mask = ir.Constant(ir.VectorType(i32, lanes), [i ^ h for i in range(lanes)])
            swapped = builder.shuffle_vector(v, v, mask)
            signs = ir.Constant(
                ir.VectorType(elem_t, lanes), [(-1.0 if i & h else 1.0) for i in range(lanes)]
            )
            v = builder.fadd(swapped, builder.fmul(v, signs))
            h *= 2
        builder.store(v, ptr, align=align)
        return context.get_dummy_value()

    return sig, codegen


def _move(kind: str):
    """An intrinsic moving one vector ``dst[di : di + lanes] = f(src[si : si + lanes])``:
    ``copy`` (f = identity), ``scale`` (times the scalar ``scale``), ``diag`` (times
    ``diag[ki : ki + lanes] * scale``). Arrays are 1-D and C-contiguous; ``dst`` may be ``src``
    only at the same offset."""

    def typer(dst, src, args):
        ok = _float_array(dst) and _float_array(src) and dst.dtype == src.dtype
        return ok and all(not isinstance(a, types.Array) or a.dtype == dst.dtype for a in args)

    def body(context, builder, signature, args):
        dst_t, src_t = signature.args[0], signature.args[2]
        lanes = _lanes(dst_t.dtype)
        align = dst_t.dtype.bitwidth // 8
        di = context.cast(builder, args[1], signature.args[1], types.intp)
        si = context.cast(builder, args[3], signature.args[3], types.intp)
        (src_p,) = _vector_ptrs(context, builder, src_t, args[2], [si], lanes)
        (dst_p,) = _vector_ptrs(context, builder, dst_t, args[0], [di], lanes)
        v = builder.load(src_p, align=align)
        if kind != "copy":
            scale_t = signature.args[-1]
            s = context.cast(builder, args[-1], scale_t, dst_t.dtype)
            i32 = ir.IntType(32)
            sv = builder.insert_element(ir.Constant(v.type, None), s, ir.Constant(i32, 0))
            splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
            sv = builder.shuffle_vector(sv, sv, splat)
            if kind == "diag":
                ki = context.cast(builder, args[5], signature.args[5], types.intp)
                (d_p,) = _vector_ptrs(context, builder, signature.args[4], args[4], [ki], lanes)
                v = builder.fmul(v, builder.fmul(builder.load(d_p, align=align), sv))
            else:
                v = builder.fmul(v, sv)
        builder.store(v, dst_p, align=align)
        return context.get_dummy_value()

    if kind == "copy":

        @intrinsic
        def move(typingctx, dst, di, src, si):
            if not typer(dst, src, ()):
                return None
            return types.void(dst, types.intp, src, types.intp), body

    elif kind == "scale":

        @intrinsic
        def move(typingctx, dst, di, src, si, scale):
            if not typer(dst, src, ()):
                return None
            return types.void(dst, types.intp, src, types.intp, scale), body

    else:

        @intrinsic
        def move(typingctx, dst, di, src, si, diag, ki, scale):
            if not typer(dst, src, (diag,)) or not _float_array(diag):
                return None
            return types.void(dst, types.intp, src, types.intp, diag, types.intp, scale), body

    return move


vcopy = _move("copy")
vscale = _move("scale")
vscale_diag = _move("diag")

