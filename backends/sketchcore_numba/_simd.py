"""Walsh-Hadamard butterflies on whole SIMD registers, written as numba intrinsics.

A radix-8 butterfly reads eight vectors of a buffer that lie ``s`` elements apart and writes them
back. LLVM does not vectorize that loop by itself (eight loads and stores on one array at a
run-time distance need more overlap checks than its vectorizer allows), so these intrinsics emit
the vector loads, adds and stores directly. A vector is one native register: ``VECTOR_BYTES`` is
64 with AVX-512, 32 with AVX/AVX2, 16 otherwise (8 float32 / 4 float64 lanes with AVX2), so a
radix-8 butterfly keeps its eight vectors in registers without spilling.

* ``bfly{2,4,8}(buf, i, s)``: the ``log2 k`` stages that combine ``buf[i + j*s : ... + lanes]``.
* ``head{1,2,4,8}(dst, d, src, i)``: ``k`` consecutive vectors of ``src``: the transform inside
  each register (lane shuffles), then radix-``k`` across them, stored to ``dst`` (``dst`` may be
  ``src`` at the same offset). ``head{k}_signs(..., bits, p, lut)`` flips signs on the way in.
* ``srad{1,2,4,8}(tmp, t, src, i, s, bits, p, ps, lut)``: ``k`` strided vectors with sign flips,
  radix-``k`` across them, stored consecutively in ``tmp`` (afjl's partial transforms).
* ``vaxpy(acc, a, x, i, c)``: ``acc[a:a+lanes] += c * x[i:i+lanes]`` with a scalar ``c`` (+-1 in
  practice, which makes the fused multiply-add exact); ``vfma(acc, a, x, i, w, k)``:
  ``acc[a:] += x[i:] * w[k:]``; ``bfly{2,4,8}_acc``: a butterfly whose outputs go, times ``w``,
  into accumulators instead of back to memory (affd's last level); ``prefetch``.
* ``vcopy``, ``vscale``, ``vscale_diag``, ``bfly_lanes``: moves and the in-register transform
  used by the permuted (column/row pass) Hadamard.

Signs come bit-packed (``numpy.packbits(..., bitorder="little")``: element ``p`` is bit ``p % 8``
of byte ``p // 8``) and are turned into XOR masks on the sign bit through ``lut``, a table of
``2^g`` rows of ``g`` integer masks (``sign_lut``), so a sign diagonal costs N/8 bytes of memory
traffic instead of N floats. Adds and subtracts by +-1 factors are exact, so results do not
depend on which instruction forms them.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = [
    "VECTOR_BYTES", "LUT_BITS", "sign_lut", "bfly8", "bfly4", "bfly2", "head8", "head4", "head2",
    "head1", "head8_signs", "head4_signs", "head2_signs", "head1_signs", "srad8", "srad4",
    "srad2", "srad1", "vaxpy", "vfma", "bfly8_acc", "bfly4_acc", "bfly2_acc", "prefetch",
    "bfly_lanes", "vcopy", "vscale", "vscale_diag",
]


def _native_vector_bytes() -> int:
    try:
        import llvmlite.binding as llb

        feats = llb.get_host_cpu_features()
    except Exception:  # noqa: BLE001 - any failure: assume SSE2 (every x86-64 and NEON)
        return 16
    if feats.get("avx512f"):
        return 64
    if feats.get("avx"):
        return 32
    return 16


#: bytes of one vector register (numba compiles for the host CPU, and so does its cache)
VECTOR_BYTES = _native_vector_bytes()


def _lanes(dtype) -> int:
    return VECTOR_BYTES * 8 // dtype.bitwidth


def lut_bits(itemsize: int) -> int:
    """Sign bits one ``lut`` row covers for this element size: ``min(lanes, 8)``."""
    return min(VECTOR_BYTES // itemsize, 8)


#: sign bits per table row for float32 / float64 (by itemsize)
LUT_BITS = {4: lut_bits(4), 8: lut_bits(8)}


def sign_lut(dtype) -> np.ndarray:
    """``(2^g, g)`` integer masks: row ``b`` has the sign bit set in lane ``i`` iff bit ``i`` of
    ``b`` is set (``g = LUT_BITS[itemsize]``)."""
    dt = np.dtype(dtype)
    g = LUT_BITS[dt.itemsize]
    ity = np.uint32 if dt.itemsize == 4 else np.uint64
    sign = ity(1) << ity(8 * dt.itemsize - 1)
    rows = np.arange(1 << g)[:, None]
    return np.where((rows >> np.arange(g)[None, :]) & 1, sign, ity(0)).astype(ity)


def _float_array(a) -> bool:
    return isinstance(a, types.Array) and a.dtype in (types.float32, types.float64)


def _int_array(a) -> bool:
    return isinstance(a, types.Array) and isinstance(a.dtype, types.Integer)


def _sign_args(data, bits, lut) -> bool:
    """Packed sign bits (bytes) and a mask table whose integers are as wide as the floats."""
    return (_float_array(data) and _int_array(bits) and bits.dtype.bitwidth == 8
            and _int_array(lut) and lut.dtype.bitwidth == data.dtype.bitwidth)


def _data(context, builder, arr_t, arr_v):
    return context.make_array(arr_t)(context, builder, value=arr_v).data


def _vptr(context, builder, arr_t, arr_v, off, lanes):
    vec_t = ir.VectorType(context.get_value_type(arr_t.dtype), lanes)
    return builder.bitcast(builder.gep(_data(context, builder, arr_t, arr_v), [off]),
                           vec_t.as_pointer())


def _intp(context, builder, val, ty):
    return context.cast(builder, val, ty, types.intp)


def _const(v, k):
    return ir.Constant(v.type, k)


def _fma_fn(builder, vt):
    """``llvm.fma`` for a float vector type (llvmlite's builder.fma takes scalars only)."""
    suffix = "f32" if isinstance(vt.element, ir.FloatType) else "f64"
    name = f"llvm.fma.v{vt.count}{suffix}"
    try:
        return builder.module.get_global(name)
    except KeyError:
        return ir.Function(builder.module, ir.FunctionType(vt, [vt, vt, vt]), name=name)


def _splat(builder, val, vt):
    i32 = ir.IntType(32)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), val, ir.Constant(i32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, vt.count), [0] * vt.count))


def _radix_stages(builder, v):
    """The ``log2 len(v)`` butterfly stages across a list of vectors."""
    k = len(v)
    h = 1
    while h < k:
        w = list(v)
        for base in range(0, k, 2 * h):
            for j in range(base, base + h):
                w[j] = builder.fadd(v[j], v[j + h])
                w[j + h] = builder.fsub(v[j], v[j + h])
        v = w
        h *= 2
    return v


def _in_register(builder, v):
    """The full transform of the lanes of one vector: per stage h, ``swap_h(v) + sign_h * v``
    (``swap_h`` exchanges lanes ``i`` and ``i ^ h``, ``sign_h`` is -1 where bit h of the lane is
    set) as one shuffle and one exact fused multiply-add."""
    vt = v.type
    lanes = vt.count
    i32 = ir.IntType(32)
    fma = _fma_fn(builder, vt)
    h = 1
    while h < lanes:
        mask = ir.Constant(ir.VectorType(i32, lanes), [i ^ h for i in range(lanes)])
        swapped = builder.shuffle_vector(v, v, mask)
        signs = ir.Constant(vt, [(-1.0 if i & h else 1.0) for i in range(lanes)])
        v = builder.call(fma, [v, signs, swapped])
        h *= 2
    return v


def _sign_mask(context, builder, bits_t, bits_v, lut_t, lut_v, pos, lanes, elem_t):
    """The XOR mask (an integer vector of ``lanes``) flipping the signs of elements
    ``pos .. pos + lanes - 1`` (``pos`` a multiple of the table's ``g`` bits)."""
    ity = lut_t.dtype
    g = min(lanes, 8)
    ivec = ir.IntType(ity.bitwidth)
    bits_p = _data(context, builder, bits_t, bits_v)
    lut_p = _data(context, builder, lut_t, lut_v)
    i8 = ir.IntType(8)
    parts = []
    for c in range(lanes // g):
        p = builder.add(pos, ir.Constant(pos.type, c * g))
        byte = builder.load(builder.gep(bits_p, [builder.lshr(p, ir.Constant(pos.type, 3))]))
        byte = builder.zext(builder.bitcast(byte, i8), pos.type)
        if g < 8:
            byte = builder.lshr(byte, builder.and_(p, ir.Constant(pos.type, 7)))
            byte = builder.and_(byte, ir.Constant(pos.type, (1 << g) - 1))
        row = builder.gep(lut_p, [builder.mul(byte, ir.Constant(pos.type, g))])
        row = builder.bitcast(row, ir.VectorType(ivec, g).as_pointer())
        parts.append(builder.load(row, align=ity.bitwidth // 8))
    while len(parts) > 1:  # concatenate halves
        n = parts[0].type.count
        i32 = ir.IntType(32)
        mask = ir.Constant(ir.VectorType(i32, 2 * n), list(range(2 * n)))
        parts = [builder.shuffle_vector(parts[i], parts[i + 1], mask)
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _flip(builder, v, mask):
    ivt = mask.type
    return builder.bitcast(builder.xor(builder.bitcast(v, ivt), mask), v.type)


def _radix(k: int):
    @intrinsic
    def bfly(typingctx, buf, i0, s):
        if not _float_array(buf):
            return None
        lanes = _lanes(buf.dtype)

        def codegen(context, builder, sig, args):
            arr_t = sig.args[0]
            i0 = _intp(context, builder, args[1], sig.args[1])
            s = _intp(context, builder, args[2], sig.args[2])
            align = arr_t.dtype.bitwidth // 8
            ptrs = [_vptr(context, builder, arr_t, args[0],
                          builder.add(i0, builder.mul(s, _const(s, j))), lanes)
                    for j in range(k)]
            v = _radix_stages(builder, [builder.load(p, align=align) for p in ptrs])
            for p, val in zip(ptrs, v):
                builder.store(val, p, align=align)
            return context.get_dummy_value()

        return types.void(buf, types.intp, types.intp), codegen

    return bfly


bfly8, bfly4, bfly2 = _radix(8), _radix(4), _radix(2)


def _head(k: int, signed: bool):
    def make_codegen(lanes):
        def codegen(context, builder, sig, args):
            dst_t, src_t = sig.args[0], sig.args[2]
            d0 = _intp(context, builder, args[1], sig.args[1])
            s0 = _intp(context, builder, args[3], sig.args[3])
            align = dst_t.dtype.bitwidth // 8
            v = []
            for j in range(k):
                p = _vptr(context, builder, src_t, args[2], builder.add(s0, _const(s0, j * lanes)),
                          lanes)
                v.append(builder.load(p, align=align))
            if signed:
                pos = _intp(context, builder, args[5], sig.args[5])
                elem_t = context.get_value_type(dst_t.dtype)
                for j in range(k):
                    m = _sign_mask(context, builder, sig.args[4], args[4], sig.args[6], args[6],
                                   builder.add(pos, _const(pos, j * lanes)), lanes, elem_t)
                    v[j] = _flip(builder, v[j], m)
            v = _radix_stages(builder, [_in_register(builder, x) for x in v])
            for j, val in enumerate(v):
                p = _vptr(context, builder, dst_t, args[0], builder.add(d0, _const(d0, j * lanes)),
                          lanes)
                builder.store(val, p, align=align)
            return context.get_dummy_value()

        return codegen

    if signed:

        @intrinsic
        def head(typingctx, dst, d0, src, s0, bits, p0, lut):
            if not (_float_array(src) and dst.dtype == src.dtype and _sign_args(dst, bits, lut)):
                return None
            sig = types.void(dst, types.intp, src, types.intp, bits, types.intp, lut)
            return sig, make_codegen(_lanes(dst.dtype))

    else:

        @intrinsic
        def head(typingctx, dst, d0, src, s0):
            if not (_float_array(dst) and _float_array(src) and dst.dtype == src.dtype):
                return None
            return types.void(dst, types.intp, src, types.intp), make_codegen(_lanes(dst.dtype))

    return head


head8, head4, head2, head1 = _head(8, False), _head(4, False), _head(2, False), _head(1, False)
head8_signs, head4_signs = _head(8, True), _head(4, True)
head2_signs, head1_signs = _head(2, True), _head(1, True)


def _srad(k: int):
    @intrinsic
    def srad(typingctx, tmp, t0, src, s0, s, bits, p0, ps, lut):
        if not (_float_array(src) and tmp.dtype == src.dtype and _sign_args(tmp, bits, lut)):
            return None
        lanes = _lanes(tmp.dtype)

        def codegen(context, builder, sig, args):
            tmp_t, src_t = sig.args[0], sig.args[2]
            t0 = _intp(context, builder, args[1], sig.args[1])
            s0 = _intp(context, builder, args[3], sig.args[3])
            s = _intp(context, builder, args[4], sig.args[4])
            p0 = _intp(context, builder, args[6], sig.args[6])
            ps = _intp(context, builder, args[7], sig.args[7])
            align = tmp_t.dtype.bitwidth // 8
            elem_t = context.get_value_type(tmp_t.dtype)
            v = []
            for j in range(k):
                off = builder.add(s0, builder.mul(s, _const(s, j)))
                p = _vptr(context, builder, src_t, args[2], off, lanes)
                x = builder.load(p, align=align)
                m = _sign_mask(context, builder, sig.args[5], args[5], sig.args[8], args[8],
                               builder.add(p0, builder.mul(ps, _const(ps, j))), lanes, elem_t)
                v.append(_flip(builder, x, m))
            v = _radix_stages(builder, v)
            for j, val in enumerate(v):
                p = _vptr(context, builder, tmp_t, args[0], builder.add(t0, _const(t0, j * lanes)),
                          lanes)
                builder.store(val, p, align=align)
            return context.get_dummy_value()

        sig = types.void(tmp, types.intp, src, types.intp, types.intp, bits, types.intp,
                         types.intp, lut)
        return sig, codegen

    return srad


srad8, srad4, srad2, srad1 = _srad(8), _srad(4), _srad(2), _srad(1)


@intrinsic
def vaxpy(typingctx, acc, a0, x, x0, c):
    """``acc[a0 : a0 + lanes] += c * x[x0 : x0 + lanes]`` (one fused multiply-add)."""
    if not (_float_array(acc) and _float_array(x) and acc.dtype == x.dtype):
        return None
    lanes = _lanes(acc.dtype)

    def codegen(context, builder, sig, args):
        acc_t, x_t = sig.args[0], sig.args[2]
        a0 = _intp(context, builder, args[1], sig.args[1])
        x0 = _intp(context, builder, args[3], sig.args[3])
        align = acc_t.dtype.bitwidth // 8
        pa = _vptr(context, builder, acc_t, args[0], a0, lanes)
        px = _vptr(context, builder, x_t, args[2], x0, lanes)
        va = builder.load(pa, align=align)
        vx = builder.load(px, align=align)
        c = context.cast(builder, args[4], sig.args[4], acc_t.dtype)
        vc = _splat(builder, c, va.type)
        builder.store(builder.call(_fma_fn(builder, va.type), [vc, vx, va]), pa, align=align)
        return context.get_dummy_value()

    return types.void(acc, types.intp, x, types.intp, c), codegen


@intrinsic
def vfma(typingctx, acc, a0, x, x0, w, w0):
    """``acc[a0 : a0 + lanes] += x[x0 : ...] * w[w0 : ...]`` (one fused multiply-add)."""
    if not (_float_array(acc) and _float_array(x) and _float_array(w)
            and acc.dtype == x.dtype == w.dtype):
        return None
    lanes = _lanes(acc.dtype)

    def codegen(context, builder, sig, args):
        acc_t, x_t, w_t = sig.args[0], sig.args[2], sig.args[4]
        a0 = _intp(context, builder, args[1], sig.args[1])
        x0 = _intp(context, builder, args[3], sig.args[3])
        w0 = _intp(context, builder, args[5], sig.args[5])
        align = acc_t.dtype.bitwidth // 8
        pa = _vptr(context, builder, acc_t, args[0], a0, lanes)
        va = builder.load(pa, align=align)
        vx = builder.load(_vptr(context, builder, x_t, args[2], x0, lanes), align=align)
        vw = builder.load(_vptr(context, builder, w_t, args[4], w0, lanes), align=align)
        builder.store(builder.call(_fma_fn(builder, va.type), [vx, vw, va]), pa, align=align)
        return context.get_dummy_value()

    return types.void(acc, types.intp, x, types.intp, w, types.intp), codegen


def _radix_acc(k: int):
    @intrinsic
    def bfly_acc(typingctx, buf, i0, s, w, acc, offs, jl):
        """The radix-``k`` butterfly of ``buf[i0 + j*s]`` (j < k), each output multiplied by
        ``w`` at its position and added into ``acc[offs[j] + jl : ...]``; ``buf`` is not written
        (affd's last level, fused with its Gaussian diagonal and the sum over blocks)."""
        if not (_float_array(buf) and _float_array(w) and _float_array(acc)
                and buf.dtype == w.dtype == acc.dtype and _int_array(offs)):
            return None
        lanes = _lanes(buf.dtype)

        def codegen(context, builder, sig, args):
            buf_t, w_t, acc_t, offs_t = sig.args[0], sig.args[3], sig.args[4], sig.args[5]
            i0 = _intp(context, builder, args[1], sig.args[1])
            s = _intp(context, builder, args[2], sig.args[2])
            jl = _intp(context, builder, args[6], sig.args[6])
            align = buf_t.dtype.bitwidth // 8
            pos = [builder.add(i0, builder.mul(s, _const(s, j))) for j in range(k)]
            v = [builder.load(_vptr(context, builder, buf_t, args[0], p, lanes), align=align)
                 for p in pos]
            v = _radix_stages(builder, v)
            offs_p = _data(context, builder, offs_t, args[5])
            fma = _fma_fn(builder, v[0].type)
            for j in range(k):
                vw = builder.load(_vptr(context, builder, w_t, args[3], pos[j], lanes), align=align)
                o = builder.load(builder.gep(offs_p, [ir.Constant(ir.IntType(64), j)]))
                o = builder.add(context.cast(builder, o, offs_t.dtype, types.intp), jl)
                pa = _vptr(context, builder, acc_t, args[4], o, lanes)
                va = builder.load(pa, align=align)
                builder.store(builder.call(fma, [v[j], vw, va]), pa, align=align)
            return context.get_dummy_value()

        sig = types.void(buf, types.intp, types.intp, w, acc, offs, types.intp)
        return sig, codegen

    return bfly_acc


bfly8_acc, bfly4_acc, bfly2_acc = _radix_acc(8), _radix_acc(4), _radix_acc(2)


@intrinsic
def prefetch(typingctx, arr, i0):
    """Hint the CPU to bring the cache line of ``arr[i0]`` into L1 (for reading); never faults."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        i0 = _intp(context, builder, args[1], sig.args[1])
        ptr = builder.gep(_data(context, builder, sig.args[0], args[0]), [i0])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        try:
            fn = builder.module.get_global("llvm.prefetch.p0i8")
        except KeyError:
            fn = ir.Function(builder.module, fnty, name="llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, types.intp), codegen


@intrinsic
def bfly_lanes(typingctx, buf, i0):
    """The full Walsh-Hadamard transform of the ``lanes`` elements ``buf[i0 : i0 + lanes]``
    inside one register."""
    if not _float_array(buf):
        return None
    lanes = _lanes(buf.dtype)

    def codegen(context, builder, sig, args):
        arr_t = sig.args[0]
        i0 = _intp(context, builder, args[1], sig.args[1])
        align = arr_t.dtype.bitwidth // 8
        ptr = _vptr(context, builder, arr_t, args[0], i0, lanes)
        builder.store(_in_register(builder, builder.load(ptr, align=align)), ptr, align=align)
        return context.get_dummy_value()

    return types.void(buf, types.intp), codegen


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
        di = _intp(context, builder, args[1], signature.args[1])
        si = _intp(context, builder, args[3], signature.args[3])
        src_p = _vptr(context, builder, src_t, args[2], si, lanes)
        dst_p = _vptr(context, builder, dst_t, args[0], di, lanes)
        v = builder.load(src_p, align=align)
        if kind != "copy":
            s = context.cast(builder, args[-1], signature.args[-1], dst_t.dtype)
            sv = _splat(builder, s, v.type)
            if kind == "diag":
                ki = _intp(context, builder, args[5], signature.args[5])
                d_p = _vptr(context, builder, signature.args[4], args[4], ki, lanes)
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
