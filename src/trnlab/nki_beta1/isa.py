"""neuronxcc.nki.isa (Beta 1): one ISA instruction per call; each returns a new tile (PSUM for the
Tensor Engine, SBUF otherwise) and accepts mask= and dtype=."""
from __future__ import annotations

import enum
import types

import numpy as np

from trnlab.core import dtypes as _dt
from trnlab.core.machine import current as _current, has_current as _has_current
from trnlab.core.srcloc import user_location as _loc
from trnlab.core.tensor import PSUM as _PSUM, SBUF as _SBUF
from trnlab.errors import NkiValidationError as _NkiValidationError
from trnlab.isa import instructions as _I
from trnlab.isa.alu import op_name as _op
from trnlab.isa.base import Engine as _Engine
from trnlab.frontend.isa_enums import (dge_mode, dma_engine, engine, gpsimd_engine, nc_version,  # noqa: F401
                                      oob_mode, reduce_cmd, scalar_engine, tensor_engine, unknown_engine,
                                      vector_engine)
from trnlab.nki_beta1 import ops as _ops
from trnlab.nki_beta1.index import Index as _Index, Predicate as _Predicate, affine_form as _affine_form
from trnlab.nki_beta1.language import _axes, _reduced_shape, matmul_result as _matmul_result
from trnlab.nki_beta1.tile import (Access as _Access, Region as _Region, Tile as _Tile, compiler_placed as _compiler_placed,
                                   cut as _cut, flush as _flush)


# --- enums (shared with the current front end) ---------------------------------------------------------
constants = types.SimpleNamespace(oob_mode=oob_mode, dge_mode=dge_mode, reduce_cmd=reduce_cmd, engine=engine)


def get_nc_version() -> nc_version:
    from trnlab.hw import get_chip
    chip = _current().chip if _has_current() else get_chip()
    return nc_version(chip.nc_version)


def _eng(e, default):
    if e is None:
        return default
    name = e.value if isinstance(e, enum.Enum) else str(e)
    return {"vector": _Engine.VECTOR, "scalar": _Engine.SCALAR, "gpsimd": _Engine.GPSIMD,
            "tensor": _Engine.TENSOR}.get(name, default)


def _name(x):
    return x.value if isinstance(x, enum.Enum) else x


def _tile(x, api, loc):
    return _ops.real_tile(x, api, loc) if _ops.is_tile(x) else x


def _operand(x, api, loc):
    """A scalar, or a [P, 1] tile operand (SBUF/PSUM)."""
    return _ops.real_tile(x, api, loc) if _ops.is_tile(x) else _ops.scalar(x)


def _simple(api, shape, dtype, build, mask=None, kind=_SBUF, targets=(_SBUF, _PSUM), required=False):
    """A tile-returning call: build(dst, region) issues the instruction(s)."""
    loc = _loc()
    shape = tuple(int(s) for s in shape)

    def emit(dst, _acc):
        region = _Region.of(mask, shape, loc)
        if region is not None and region.empty:
            return
        build(dst, region, loc)
    return _ops.new_result(shape, dtype, kind, emit, api, targets=targets, required=required)


def _res(region):
    return region.residual if region is not None else None


# --- tensor engine ------------------------------------------------------------------------------------
def nc_matmul(stationary, moving, is_stationary_onezero=False, is_moving_onezero=False, is_transpose=False,
              tile_position=(), tile_size=(), mask=None, perf_mode=None, **_):
    """[K, M].T @ [K, N] -> new PSUM tile [M, N] (fp32). Use `psum += nisa.nc_matmul(...)` to accumulate."""
    loc = _loc()
    _flush()
    s = _matmul_operand(stationary, loc)
    mv = _matmul_operand(moving, loc)
    mode = _name(perf_mode) or "none"
    mode = "double_row" if str(mode).startswith("double_row") else mode
    kw = dict(is_transpose=bool(is_transpose), perf_mode=mode, tile_position=tuple(tile_position or ()),
              tile_size=tuple(tile_size or ()), onezero=bool(is_stationary_onezero or is_moving_onezero))
    if mode == "double_row":
        return _matmul_result_dr(s, mv, loc, mask, kw)
    return _matmul_result(s, mv, loc, "nisa.nc_matmul", mask, **kw)


def _matmul_operand(x, loc):
    """A matmul input tile. The result of an earlier call that the kernel never placed itself (e.g.
    `w_t = nisa.nc_transpose(w)`, which lands in PSUM) is moved to SBUF first, as neuronx-cc does for such
    compiler-placed tiles; a PSUM tile the kernel allocated is passed on (and rejected by the rule check)."""
    t = _ops.real_tile(x, "nc_matmul", loc)
    if t.buffer == _PSUM and _compiler_placed(t):
        t = _ops.to_sbuf(t, "nisa.nc_matmul", loc)
    return t


def _matmul_result_dr(s, mv, loc, mask, kw):
    shape = (s.free_size // 2, mv.free_size // 2)
    _full_mask_only(mask, shape, "nisa.nc_matmul", loc)

    def emit(dst, accumulate):
        acc = (True if dst.is_initialized() else None) if accumulate else False
        _ops.issue(_I.MatMul(api="nisa.nc_matmul", loc=loc, dst=dst, stationary=s, moving=mv, accumulate=acc, **kw))
    return _ops.new_result(shape, _dt.float32, _PSUM, emit, "nisa.nc_matmul", targets=(_PSUM,), accumulates=True)


def nc_transpose(data, mask=None, dtype=None, engine=engine.unknown, **_):
    """[P, F] -> [F, P]: Tensor Engine (SBUF -> PSUM, <= 128x128) or Vector Engine (<= 32x32)."""
    loc = _loc()
    _flush()
    t = _ops.real_tile(data, "nc_transpose", loc)
    name = _name(engine)
    if name in (None, "unknown"):
        small = t.shape[0] <= 32 and t.free_size <= 32
        name = "vector" if (t.buffer == _PSUM and small) else "tensor"
    eng = _eng(name, _Engine.TENSOR)
    shape = (t.free_size, t.shape[0])
    _full_mask_only(mask, shape, "nisa.nc_transpose", loc)
    kind = _PSUM if eng == _Engine.TENSOR else _SBUF

    def build(dst, region, loc):
        _ops.issue(_I.Transpose(api="nisa.nc_transpose", loc=loc, dst=dst, src=t, engine=eng))
    return _simple("nisa.nc_transpose", shape, _dt.canonical(dtype or t.dtype), build, None, kind,
                   targets=(_PSUM,) if kind == _PSUM else (_SBUF, _PSUM))


# --- scalar / vector engines ------------------------------------------------------------------------------
def activation(op, data, bias=None, scale=1.0, mask=None, dtype=None, reduce_op=None, reduce_res=None,
               reduce_cmd=reduce_cmd.idle, **_):
    """op(data * scale + bias) on the Scalar Engine."""
    loc = _loc()
    _flush()
    t = _ops.real_tile(data, "activation", loc)
    b = _operand(bias, "activation", loc) if bias is not None else None
    sc = _operand(scale, "activation", loc)
    rr = _ops.real_tile(reduce_res, "activation", loc) if reduce_res is not None else None
    func = _op(op)

    def build(dst, region, loc):
        shape = tuple(t.shape)
        _ops.issue(_I.Activation(api="nisa.activation", loc=loc, dst=_cut(dst, region, shape), func=func,
                                 data=_cut(t, region, shape), bias=_cut(b, region, shape), scale=_cut(sc, region, shape),
                                 reduce_op=_op(reduce_op) if reduce_op is not None else None, reduce_res=rr,
                                 reduce_cmd=_name(reduce_cmd), mask=_res(region)))
    return _simple("nisa.activation", t.shape, _ops.out_dtype(dtype, t), build, mask)


def activation_reduce(op, data, reduce_op, reduce_res, bias=None, scale=1.0, mask=None, dtype=None, **_):
    """activation with an add-reduce of each partition written into reduce_res ([P, 1], in place)."""
    loc = _loc()
    _flush()
    t = _ops.real_tile(data, "activation_reduce", loc)
    b = _operand(bias, "activation_reduce", loc) if bias is not None else None
    sc = _operand(scale, "activation_reduce", loc)
    rr = _ops.real_tile(reduce_res, "activation_reduce", loc)
    func = _op(op)

    def build(dst, region, loc):
        shape = tuple(t.shape)
        _ops.issue(_I.Activation(api="nisa.activation_reduce", loc=loc, dst=_cut(dst, region, shape), func=func,
                                 data=_cut(t, region, shape), bias=_cut(b, region, shape),
                                 scale=_cut(sc, region, shape), reduce_op=_op(reduce_op),
                                 reduce_res=_cut(rr, region, shape), reduce_cmd="reset_reduce", mask=_res(region)))
    return _simple("nisa.activation_reduce", t.shape, _ops.out_dtype(dtype, t), build, mask, required=True)


def tensor_tensor(data1, data2, op, dtype=None, mask=None, engine=engine.unknown, **_):
    loc = _loc()
    _flush()
    a = _ops.real_tile(data1, "tensor_tensor", loc)
    b = _ops.real_tile(data2, "tensor_tensor", loc)
    opn = _op(op)
    eng = _eng(_name(engine), None)

    def emit(dst, _acc):
        _ops.binary_into(dst, a, b, opn, loc, api="nisa.tensor_tensor", mask=mask, engine=eng)
    return _ops.new_result(_ops.bshape(a, b), _ops.out_dtype(dtype, a, b), _SBUF, emit, "nisa.tensor_tensor")


def tensor_scalar(data, op0, operand0, reverse0=False, op1=None, operand1=None, reverse1=False, dtype=None,
                  mask=None, engine=engine.unknown, **_):
    loc = _loc()
    _flush()
    t = _ops.real_tile(data, "tensor_scalar", loc)
    o0 = _operand(operand0, "tensor_scalar", loc)
    o1 = _operand(operand1, "tensor_scalar", loc) if operand1 is not None else None
    eng = _eng(_name(engine), _Engine.VECTOR)

    def build(dst, region, loc):
        shape = tuple(t.shape)
        _ops.issue(_I.TensorScalar(api="nisa.tensor_scalar", loc=loc, dst=_cut(dst, region, shape),
                                   data=_cut(t, region, shape), op0=_op(op0), operand0=_cut(o0, region, shape),
                                   reverse0=bool(reverse0), op1=_op(op1) if op1 is not None else None,
                                   operand1=_cut(o1, region, shape), reverse1=bool(reverse1), engine=eng,
                                   mask=_res(region)))
    return _simple("nisa.tensor_scalar", t.shape, _ops.out_dtype(dtype, t), build, mask)


def tensor_scalar_reduce(data, op0, operand0, reduce_op, reduce_res, reverse0=False, dtype=None, mask=None, **_):
    """tensor_scalar with the result also reduced per partition into reduce_res (in place)."""
    loc = _loc()
    _flush()
    t = _ops.real_tile(data, "tensor_scalar_reduce", loc)
    o0 = _operand(operand0, "tensor_scalar_reduce", loc)
    rr = _ops.real_tile(reduce_res, "tensor_scalar_reduce", loc)
    _full_mask_only(mask, tuple(t.shape), "nisa.tensor_scalar_reduce", loc)

    def build(dst, region, loc):
        _ops.issue(_I.TensorScalar(api="nisa.tensor_scalar_reduce", loc=loc, dst=dst, data=t, op0=_op(op0),
                                   operand0=o0, reverse0=bool(reverse0), accum_op=_op(reduce_op), accum_dst=rr))
    return _simple("nisa.tensor_scalar_reduce", t.shape, _ops.out_dtype(dtype, t), build, mask, required=True)


def scalar_tensor_tensor(data, op0, operand0, op1, operand1, reverse0=False, reverse1=False, dtype=None,
                         mask=None, engine=engine.unknown, **_):
    """(data op0 operand0) op1 operand1 (operand1 a tile)."""
    loc = _loc()
    _flush()
    t = _ops.real_tile(data, "scalar_tensor_tensor", loc)
    o0 = _operand(operand0, "scalar_tensor_tensor", loc)
    o1 = _ops.real_tile(operand1, "scalar_tensor_tensor", loc)
    eng = _eng(_name(engine), _Engine.VECTOR)

    def build(dst, region, loc):
        shape = tuple(t.shape)
        _ops.issue(_I.ScalarTensorTensor(api="nisa.scalar_tensor_tensor", loc=loc, dst=_cut(dst, region, shape),
                                         data=_cut(t, region, shape), op0=_op(op0), operand0=_cut(o0, region, shape),
                                         op1=_op(op1), operand1=_cut(o1, region, shape), reverse0=bool(reverse0),
                                         reverse1=bool(reverse1), engine=eng, mask=_res(region)))
    return _simple("nisa.scalar_tensor_tensor", t.shape, _ops.out_dtype(dtype, t, o1), build, mask)


def tensor_reduce(op, data, axis, mask=None, dtype=None, negate=False, keepdims=False, **_):
    loc = _loc()
    _flush()
    t = _ops.real_tile(data, "tensor_reduce", loc)
    axes = _axes(axis, t.ndim, loc)
    shape = _reduced_shape(t.shape, axes, keepdims)

    def build(dst, region, loc):
        if region is not None:
            raise NotImplementedError(f"nisa.tensor_reduce(mask=...) is not modelled. At {loc}")
        _ops.issue(_I.TensorReduce(api="nisa.tensor_reduce", loc=loc, dst=dst, data=t, op=_op(op), axes=axes,
                                   negate=bool(negate)))
    return _simple("nisa.tensor_reduce", shape, _ops.out_dtype(dtype, t), build, None)


def tensor_copy(src, mask=None, dtype=None, engine=engine.unknown, **_):
    loc = _loc()
    _flush()
    t = _ops.real_tile(src, "tensor_copy", loc)
    eng = _eng(_name(engine), _Engine.VECTOR)

    def emit(dst, _acc):
        _ops.copy_into(dst, t, loc, "nisa.tensor_copy", mask=mask, engine=eng)
    return _ops.new_result(t.shape, _dt.canonical(dtype or t.dtype), _SBUF, emit, "nisa.tensor_copy")


def reciprocal(data, dtype=None, mask=None, **_):
    loc = _loc()
    _flush()
    t = _ops.real_tile(data, "reciprocal", loc)

    def build(dst, region, loc):
        shape = tuple(t.shape)
        _ops.issue(_I.Reciprocal(api="nisa.reciprocal", loc=loc, dst=_cut(dst, region, shape),
                                 data=_cut(t, region, shape), mask=_res(region)))
    return _simple("nisa.reciprocal", t.shape, _ops.out_dtype(dtype, t), build, mask)


def memset(shape, value, dtype, mask=None, engine=engine.unknown, **_):
    shape = tuple(int(s) for s in shape)
    eng = _eng(_name(engine), _Engine.VECTOR)

    def build(dst, region, loc):
        _ops.issue(_I.Memset(api="nisa.memset", loc=loc, dst=_cut(dst, region, shape), value=_ops.scalar(value),
                             engine=eng, mask=_res(region)))
    _flush()
    return _simple("nisa.memset", shape, _dt.canonical(dtype), build, mask)


def _affine_pattern(values: np.ndarray, api: str, loc: str):
    """(offset, channel_multiplier, [[step, num], ...]) of an affine [P, f...] index expression."""
    form = _affine_form(values)
    if form is None:
        raise _NkiValidationError(f"{api}: the expression is not affine in nl.arange / mgrid indices. At {loc}")
    offset, coefs = form
    pattern = tuple((int(c), int(n)) for c, n in zip(coefs[1:], values.shape[1:]))
    return offset, int(coefs[0]), pattern or ((0, 1),)


def iota(expr, dtype, mask=None, **_):
    """A tile holding the values of an affine index expression, e.g. nisa.iota(i_p*512 + i_f, nl.int32)."""
    loc = _loc()
    _flush()
    values = expr.values if isinstance(expr, _Index) else np.asarray(expr, dtype=np.int64)
    if values.ndim < 2:
        values = values.reshape(1, -1)
    _affine_pattern(values, "nisa.iota", loc)
    shape = values.shape

    def build(dst, region, loc):
        v = values if region is None else values[region.box]
        offset, cm, pattern = _affine_pattern(np.ascontiguousarray(v), "nisa.iota", loc)
        _ops.issue(_I.Iota(api="nisa.iota", loc=loc, dst=_cut(dst, region, shape), pattern=pattern, offset=offset,
                           channel_multiplier=cm, mask=_res(region)))
    return _simple("nisa.iota", shape, _dt.canonical(dtype), build, mask, targets=(_SBUF,))


def affine_select(pred, on_true_tile, on_false_value, mask=None, dtype=None, **_):
    """where(pred, on_true_tile, on_false_value) for an affine comparison pred (e.g. i_p >= i_f)."""
    loc = _loc()
    _flush()
    # GpSimd cannot read PSUM; the Beta 1 compiler stages a PSUM on_true_tile through SBUF (AWS's causal
    # attention tutorial selects straight from a matmul's PSUM tile).
    t = _ops.to_sbuf(_ops.real_tile(on_true_tile, "affine_select", loc), "nisa.affine_select", loc)
    if not isinstance(pred, _Predicate) or pred.diff is None:
        raise _NkiValidationError(f"nisa.affine_select: pred must be one comparison of affine index expressions "
                                  f"(not combined with & or |); use nl.where otherwise. At {loc}")
    shape = tuple(t.shape)
    diff = np.ascontiguousarray(np.broadcast_to(pred.diff.values, shape))
    _affine_pattern(diff, "nisa.affine_select", loc)

    def build(dst, region, loc):
        v = diff if region is None else diff[region.box]
        offset, cm, pattern = _affine_pattern(np.ascontiguousarray(v), "nisa.affine_select", loc)
        _ops.issue(_I.AffineSelect(api="nisa.affine_select", loc=loc, dst=_cut(dst, region, shape),
                                   on_true=_cut(t, region, shape), on_false_value=float(on_false_value),
                                   pattern=pattern, offset=offset, channel_multiplier=cm, cmp_op=pred.op,
                                   mask=_res(region)))
    return _simple("nisa.affine_select", shape, _ops.out_dtype(dtype, t), build, mask, targets=(_SBUF,))


# --- data movement ------------------------------------------------------------------------------------
def dma_copy(dst, src, mask=None, dst_rmw_op=None, oob_mode=oob_mode.error, dge_mode=dge_mode.unknown, **_):
    """dst = src through a DMA queue (writes dst in place, returns None)."""
    loc = _loc()
    if dst_rmw_op is not None:
        raise NotImplementedError(f"nisa.dma_copy(dst_rmw_op=...) is not modelled. At {loc}")
    _flush()
    d = dst if isinstance(dst, _Access) else _ops.tile_of(dst)
    s = src if isinstance(src, _Access) else _ops.real_tile(src, "dma_copy", loc)
    shape = tuple(d.shape)
    region = _Region.of(mask, shape, loc)
    if region is not None and region.empty:
        return
    _ops.issue(_I.DmaCopy(api="nisa.dma_copy", loc=loc, dst=_cut(d, region, shape), src=_cut(s, region, shape),
                          raw_bytes=_name(dge_mode) == "hwdge", mask=_res(region)))


def dma_transpose(src, axes=None, mask=None, dtype=None, **_):
    loc = _loc()
    _flush()
    s = _ops.tile_of(src)
    axes = tuple(axes) if axes is not None else tuple(reversed(range(s.ndim)))
    shape = tuple(s.shape[a] for a in axes)
    _full_mask_only(mask, shape, "nisa.dma_transpose", loc)

    def build(dst, region, loc):
        _ops.issue(_I.DmaTranspose(api="nisa.dma_transpose", loc=loc, dst=dst, src=s, axes=axes))
    return _simple("nisa.dma_transpose", shape, _dt.canonical(dtype or s.dtype), build, None, targets=(_SBUF,))


# --- newer vector-engine instructions (issued when the ISA provides them) ---------------------------------
def tensor_tensor_scan(data0, data1, initial, op0, op1, dtype=None, mask=None, reverse0=False, reverse1=False, **_):
    """r[i] = (data0[i] op0 r[i-1]) op1 data1[i] per partition, r[-1] = initial."""
    loc = _loc()
    _flush()
    cls = _ops.isa_class("TensorTensorScan", "nisa.tensor_tensor_scan")
    a = _ops.real_tile(data0, "tensor_tensor_scan", loc)
    b = _ops.real_tile(data1, "tensor_tensor_scan", loc)
    init = _operand(initial, "tensor_tensor_scan", loc)

    def build(dst, region, loc):
        shape = tuple(a.shape)
        if region is not None and any(r.start != 0 for r in region.box[1:]):
            # the recurrence runs along the free axis from element 0: a mask may cut its tail (a partial
            # tile), not its head
            raise NotImplementedError(f"nisa.tensor_tensor_scan(mask=...) must keep the start of the scanned "
                                      f"free axis; a mask that skips its first elements is not modelled. At {loc}")
        rows = region.box[0] if region is not None else slice(None)
        res = _res(region)
        if res is not None and not (res.all(axis=tuple(range(1, res.ndim))) | ~res.any(axis=tuple(range(1, res.ndim)))).all():
            raise NotImplementedError(f"nisa.tensor_tensor_scan(mask=...) must select whole rows (partitions). At {loc}")
        init_rows = init._view(init.array[rows]) if isinstance(init, _Tile) else init
        _ops.issue(cls(api="nisa.tensor_tensor_scan", loc=loc, dst=_cut(dst, region, shape),
                       data0=_cut(a, region, shape), data1=_cut(b, region, shape), initial=init_rows,
                       op0=_op(op0), op1=_op(op1), reverse0=bool(reverse0), reverse1=bool(reverse1), mask=res))
    return _simple("nisa.tensor_tensor_scan", a.shape, _ops.out_dtype(dtype, a, b), build, mask)


def _masked_input(data, mask, api: str, loc: str):
    """(operand, partition rows) of a reduction-style call whose mask ranges over the INPUT's iteration
    space (e.g. bn_stats on the last, partial chunk of a row): the input is cut to the mask's box and
    the output keeps its shape, written on the selected partitions only."""
    if mask is None:
        return _ops.real_tile(data, api, loc), None
    src = data if isinstance(data, _Access) else _ops.real_tile(data, api, loc)
    shape = tuple(src.shape)
    region = _Region.of(mask, shape, loc)
    if region.empty:
        return None, None
    if region.residual is not None:
        raise NotImplementedError(f"{api} with a non-rectangular mask is not modelled by trnlab. At {loc}")
    return _cut(src, region, shape), region.box[0]


def _one_input(api: str, cls_name: str, shape_of, field: str = "data", default_dtype=None):
    def fn(data, mask=None, dtype=None, **_):
        loc = _loc()
        _flush()
        cls = _ops.isa_class(cls_name, f"nisa.{api}")
        t, rows = _masked_input(data, mask, f"nisa.{api}", loc)
        if t is None:                                    # the mask selects nothing
            return _simple(f"nisa.{api}", shape_of(data), dtype or default_dtype or data.dtype,
                           lambda *a: None, None)

        def build(dst, region, loc):
            if rows is not None:
                dst = _cut(dst, _Region((rows, slice(None)), None, False), dst.shape)
            _ops.issue(cls(api=f"nisa.{api}", loc=loc, dst=dst, **{field: t}))
        out_dt = _dt.canonical(dtype) if dtype is not None else (default_dtype or t.dtype)
        return _simple(f"nisa.{api}", shape_of(data), out_dt, build, None)
    fn.__name__ = api
    return fn


bn_stats = _one_input("bn_stats", "BnStats", lambda t: (t.shape[0], 6), default_dtype=_dt.float32)
bn_aggr = _one_input("bn_aggr", "BnAggr", lambda t: (t.shape[0], 2), default_dtype=_dt.float32)
max8 = _one_input("max8", "Max8", lambda t: (t.shape[0], 8), field="src")


def nc_find_index8(data, vals, mask=None, dtype=None, **_):
    loc = _loc()
    _flush()
    cls = _ops.isa_class("NcFindIndex8", "nisa.nc_find_index8")
    t = _ops.real_tile(data, "nc_find_index8", loc)
    v = _ops.real_tile(vals, "nc_find_index8", loc)
    _full_mask_only(mask, (t.shape[0], 8), "nisa.nc_find_index8", loc)

    def build(dst, region, loc):
        _ops.issue(cls(api="nisa.nc_find_index8", loc=loc, dst=dst, data=t, vals=v))
    return _simple("nisa.nc_find_index8", (t.shape[0], 8), _dt.canonical(dtype or _dt.uint32), build, None)


def nc_match_replace8(data, vals, imm, dst_idx=None, mask=None, dtype=None, **_):
    loc = _loc()
    _flush()
    cls = _ops.isa_class("NcMatchReplace8", "nisa.nc_match_replace8")
    t = _ops.real_tile(data, "nc_match_replace8", loc)
    v = _ops.real_tile(vals, "nc_match_replace8", loc)
    di = _ops.real_tile(dst_idx, "nc_match_replace8", loc) if dst_idx is not None else None
    _full_mask_only(mask, tuple(t.shape), "nisa.nc_match_replace8", loc)

    def build(dst, region, loc):
        _ops.issue(cls(api="nisa.nc_match_replace8", loc=loc, dst=dst, data=t, vals=v, imm=float(imm), dst_idx=di))
    return _simple("nisa.nc_match_replace8", t.shape, _ops.out_dtype(dtype, t), build, None)


def tensor_copy_predicated(src, dst, predicate, mask=None, dtype=None, reverse_pred=False, **_):
    """dst = src where predicate (in place, returns None)."""
    loc = _loc()
    _flush()
    cls = _ops.isa_class("TensorCopyPredicated", "nisa.tensor_copy_predicated")
    d = _ops.real_tile(dst, "tensor_copy_predicated", loc)
    s = _operand(src, "tensor_copy_predicated", loc)
    p = _ops.real_tile(predicate, "tensor_copy_predicated", loc)
    _full_mask_only(mask, tuple(d.shape), "nisa.tensor_copy_predicated", loc)
    _ops.issue(cls(api="nisa.tensor_copy_predicated", loc=loc, dst=d, src=s, predicate=p,
                   reverse_pred=bool(reverse_pred)))


def tensor_partition_reduce(op, data, mask=None, dtype=None, **_):
    loc = _loc()
    _flush()
    cls = _ops.isa_class("TensorPartitionReduce", "nisa.tensor_partition_reduce")
    t = _ops.real_tile(data, "tensor_partition_reduce", loc)
    _full_mask_only(mask, (1,) + tuple(t.shape[1:]), "nisa.tensor_partition_reduce", loc)

    def build(dst, region, loc):
        _ops.issue(cls(api="nisa.tensor_partition_reduce", loc=loc, dst=dst, data=t, op=_op(op)))
    return _simple("nisa.tensor_partition_reduce", (1,) + tuple(t.shape[1:]), _ops.out_dtype(dtype, t), build, None)


# --- selects, shuffles and cumulative scans (keyword-only in Beta 1; dst= writes in place) ---------------
def _no_mask(mask, api: str, loc: str) -> None:
    if mask is not None:
        raise NotImplementedError(f"{api}(mask=...) is not modelled by trnlab. At {loc}")


def _full_mask_only(mask, shape: tuple, api: str, loc: str) -> None:
    """A call whose mask= trnlab does not model: a mask selecting the whole iteration space is a no-op;
    anything else is refused by name (never silently ignored)."""
    if mask is None:
        return
    values = mask.values if isinstance(mask, _Predicate) else np.asarray(mask, dtype=bool)
    try:
        if np.broadcast_to(values, shape).all():
            return
    except ValueError:
        pass
    raise NotImplementedError(f"{api}(mask=...) selecting part of its {list(shape)} iteration space is not "
                              f"modelled by trnlab. At {loc}")


def _begin(api: str, cls_name: str, mask):
    """(loc, ISA class) of a call that does not model mask=; issues any pending result first."""
    loc = _loc()
    _no_mask(mask, api, loc)
    _flush()
    return loc, _ops.isa_class(cls_name, api)


def _result_or_inplace(api: str, dst, shape, dtype, build, now: bool = False):
    """With dst given, issue into it now (returns None); else a new SBUF tile, issued on first use unless
    `now` (the call also writes an in-place operand such as reduce_res)."""
    if dst is not None:
        loc = _loc()
        build(_ops.real_tile(dst, api.split(".")[-1], loc), None, loc)
        return None
    result = _simple(api, shape, dtype, build, None)
    return result.materialize() if now else result


def select_reduce(*, dst=None, predicate, on_true, on_false, reduce_res=None, reduce_cmd=reduce_cmd.idle,
                  reduce_op=None, reverse_pred=False, mask=None, dtype=None, **_):
    """dst = where(predicate, on_true, on_false) with an optional max-reduce per partition into reduce_res."""
    api = "nisa.select_reduce"
    loc, cls = _begin(api, "SelectReduce", mask)
    pred = _ops.real_tile(predicate, "select_reduce", loc)
    t = _ops.real_tile(on_true, "select_reduce", loc)
    f = _operand(on_false, "select_reduce", loc)
    rr = _ops.real_tile(reduce_res, "select_reduce", loc) if reduce_res is not None else None

    def build(d, region, loc):
        _ops.issue(cls(api=api, loc=loc, dst=d, predicate=pred, on_true=t, on_false=f, reduce_res=rr,
                       reduce_cmd=_name(reduce_cmd), reduce_op=_op(reduce_op) if reduce_op is not None else "maximum",
                       reverse_pred=bool(reverse_pred)))
    return _result_or_inplace(api, dst, t.shape, _ops.out_dtype(dtype, t), build, now=rr is not None)


def range_select(*, on_true_tile, comp_op0, comp_op1, bound0, bound1, reduce_cmd=reduce_cmd.idle, reduce_res=None,
                 reduce_op=None, range_start=0, on_false_value=None, mask=None, dtype=None, dst=None, **_):
    """where(cmp0(range_start + i, bound0) & cmp1(range_start + i, bound1), on_true_tile, on_false_value)
    over the free index i (trn2+); max-reduce per partition into reduce_res."""
    api = "nisa.range_select"
    loc, cls = _begin(api, "RangeSelect", mask)
    t = _ops.real_tile(on_true_tile, "range_select", loc)
    b0 = _ops.real_tile(bound0, "range_select", loc) if _ops.is_tile(bound0) else bound0
    b1 = _ops.real_tile(bound1, "range_select", loc) if _ops.is_tile(bound1) else bound1
    rr = _ops.real_tile(reduce_res, "range_select", loc) if reduce_res is not None else None
    fill = float(np.finfo(np.float32).min) if on_false_value is None else float(on_false_value)

    def build(d, region, loc):
        _ops.issue(cls(api=api, loc=loc, dst=d, on_true=t, comp_op0=_op(comp_op0), comp_op1=_op(comp_op1),
                       bound0=b0, bound1=b1, reduce_cmd=_name(reduce_cmd), reduce_res=rr,
                       reduce_op=_op(reduce_op) if reduce_op is not None else "maximum",
                       range_start=int(range_start), on_false_value=fill))
    return _result_or_inplace(api, dst, t.shape, _ops.out_dtype(dtype, t), build, now=rr is not None)


def nc_stream_shuffle(src, dst, shuffle_mask, *, dtype=None, mask=None, **_):
    """dst[q*32 + i] = src[q*32 + shuffle_mask[i]] in every 32-partition quadrant (in place; 255 keeps dst)."""
    api = "nisa.nc_stream_shuffle"
    loc, cls = _begin(api, "NcStreamShuffle", mask)
    s = _ops.real_tile(src, "nc_stream_shuffle", loc)
    d = _ops.real_tile(dst, "nc_stream_shuffle", loc)
    _ops.issue(cls(api=api, loc=loc, dst=d, src=s, shuffle_mask=tuple(int(v) for v in shuffle_mask)))


def tensor_scalar_cumulative(src, op0, op1, imm0, imm1=None, reduce_cmd=reduce_cmd.reset_reduce, *, dst=None,
                             reverse0=False, dtype=None, mask=None, **_):
    """reg = op1(op0(src[i], imm0), reg); out[i] = reg along each partition (trn2+). Returns a new tile, or
    writes dst= in place."""
    api = "nisa.tensor_scalar_cumulative"
    loc, cls = _begin(api, "TensorScalarCumulative", mask)
    s = _ops.real_tile(src, "tensor_scalar_cumulative", loc)
    i0 = _operand(imm0, "tensor_scalar_cumulative", loc)
    i1 = _operand(imm1, "tensor_scalar_cumulative", loc) if imm1 is not None else None

    def build(d, region, loc):
        _ops.issue(cls(api=api, loc=loc, dst=d, src=s, op0=_op(op0), op1=_op(op1), imm0=i0, imm1=i1,
                       reduce_cmd=_name(reduce_cmd), reverse0=bool(reverse0)))
    return _result_or_inplace(api, dst, s.shape, _ops.out_dtype(dtype, s), build)


def dropout(data, prob, mask=None, dtype=None, **_):
    """data with each element zeroed with probability prob (a scalar or [P, 1] tile); no rescaling."""
    api = "nisa.dropout"
    loc, cls = _begin(api, "Dropout", mask)
    t = _ops.real_tile(data, "dropout", loc)
    p = _operand(prob, "dropout", loc)

    def build(d, region, loc):
        _ops.issue(cls(api=api, loc=loc, dst=d, data=t, prob=p))
    return _simple(api, t.shape, _ops.out_dtype(dtype, t), build, None)


def local_gather(*args, **kwargs):
    raise NotImplementedError(f"nki.isa.local_gather (Beta 1) is not modelled by trnlab: the ISA layer has no "
                              f"local_gather instruction yet. At {_loc()}")


def _not_modelled(name):
    def fn(*args, **kwargs):
        raise NotImplementedError(f"nki.isa.{name} (Beta 1) is not modelled by trnlab. At {_loc()}")
    fn.__name__ = name
    return fn


for _api in ("select_reduce", "range_select", "local_gather", "nc_stream_shuffle", "dropout", "rng",
             "builtin_custom_op", "sequence_bounds", "tensor_copy_dynamic_src", "tensor_copy_dynamic_dst",
             "tensor_scalar_cumulative", "_tiled_offloaded_memcpy", "_tiled_offloaded_fma"):
    if _api not in globals():
        globals()[_api] = _not_modelled(_api)
