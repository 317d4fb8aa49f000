"""nki.isa for the current NKI front end: destination-first calls that issue ISA instructions."""
from __future__ import annotations

import enum
import inspect

import numpy as np

from trnlab.core.machine import _current as _machines, current as _current
from trnlab.core.srcloc import user_location as _loc
from trnlab.nki._signature import check_module as _check_module
from trnlab.errors import DtypeError as _DtypeError, NkiValidationError as _NkiValidationError
from trnlab.core import dtypes as _dt, inputs as _inputs
from trnlab.core.tensor import HBM as _HBM, PSUM as _PSUM, SBUF as _SBUF
from trnlab.isa import dma as _D, gpsimd as _G, instructions as _I, random as _R, vector as _V
from trnlab.isa.alu import op_name as _op
from trnlab.isa.indirection import TensorCopyIndirect as _TensorCopyIndirect, TensorIndirection as _TI
from trnlab.isa.base import Engine as _Engine, maker as _maker
from trnlab.frontend.isa_enums import (dge_mode, dma_engine, engine, gpsimd_engine, nc_version,  # noqa: F401
                                      oob_mode, reduce_cmd, scalar_engine, tensor_engine, unknown_engine,
                                      vector_engine)


# --- engines and enums (shared with the Beta 1 front end) ------------------------------------------------
class matmul_perf_mode(enum.Enum):
    none = "none"
    double_row = "double_row"
    double_row_gen3 = "double_row"


_PM_NONE = matmul_perf_mode.none       # (nc_matmul's default: its name without the _name lookup)


def get_nc_version() -> nc_version:
    from trnlab.core.machine import has_current
    from trnlab.hw import get_chip
    chip = _current().chip if has_current() else get_chip()
    return nc_version(chip.nc_version)


def _engine(e, default: _Engine) -> _Engine:
    if e is None:
        return default
    name = e.value if isinstance(e, enum.Enum) else str(e)
    return {"vector": _Engine.VECTOR, "scalar": _Engine.SCALAR, "gpsimd": _Engine.GPSIMD,
            "tensor": _Engine.TENSOR, "pool": _Engine.GPSIMD, "act": _Engine.SCALAR}.get(name, default)


# The instructions kernels issue most, built by their constructor functions (isa.base.maker: the same
# objects as the class call, without CPython's keyword-argument round trip through a dict).
_MatMul, _TensorTensor, _TensorCopy, _DmaCopy, _Memset, _Activation, _TensorScalar, _Transpose = map(
    _maker, (_I.MatMul, _I.TensorTensor, _I.TensorCopy, _I.DmaCopy, _I.Memset, _I.Activation, _I.TensorScalar,
             _I.Transpose))


# id(enum member) -> (member, its value): an Enum's .value and __hash__ run Python code (hot: every call).
# The entry holds the member, so its id is never reused while cached.
_NAMES: dict = {}


def _name(x) -> str:
    e = _NAMES.get(id(x))
    if e is not None and e[0] is x:
        return e[1]
    if not isinstance(x, enum.Enum):
        return str(x)
    _NAMES[id(x)] = (x, x.value)
    return x.value


def _issue(instr) -> None:
    stack = _machines.get()                 # core.machine.current(), inline (hot: every call)
    machine = stack[-1] if stack else _current()
    try:
        machine.issue(instr)
    except AttributeError as exc:      # e.g. src="x": name the operand instead of "'str' has no attribute"
        bad = _inputs.non_tensor_operand(instr)
        if bad is None:
            raise
        raise bad from exc


# --- data movement ------------------------------------------------------------------------------------
def dma_copy(dst, src, priority=None, oob_mode=oob_mode.error, dge_mode=dge_mode.unknown, engine=engine.unknown,
             name=None):
    """dst = src by DMA; an operand made by .ap(vector_offset=idx, indirect_dim=d) is gathered/scattered."""
    loc = _loc()
    if isinstance(dst, _D.IndirectAccess) or isinstance(src, _D.IndirectAccess):
        if _name(dge_mode) == "hwdge":
            raise _NkiValidationError(f"nisa.dma_copy: hardware DGE has no indirect (gather/scatter) support; "
                                      f"use dge_mode=swdge or unknown. At {loc}")
        _issue(_D.DmaIndirect(api="nisa.dma_copy", loc=loc, dst=dst, src=src, oob_mode=_name(oob_mode)))
        return
    _issue(_DmaCopy(api="nisa.dma_copy", loc=loc, dst=dst, src=src, raw_bytes=_name(dge_mode) == "hwdge"))


_DMA_TRANSPOSE_AXES = {2: (1, 0), 3: (2, 1, 0), 4: (3, 1, 2, 0)}


def dma_transpose(dst, src, axes=None, priority=None, dge_mode=dge_mode.unknown, oob_mode=oob_mode.error,
                  name=None):
    loc = _loc()
    if isinstance(src, _D.IndirectAccess):
        raise NotImplementedError(f"nisa.dma_transpose with an indirect (vector_offset) src is not modelled. At {loc}")
    if axes is None:
        axes = _DMA_TRANSPOSE_AXES.get(src.ndim, tuple(reversed(range(src.ndim))))
    _issue(_I.DmaTranspose(api="nisa.dma_transpose", loc=loc, dst=dst, src=src, axes=tuple(axes)))


def tensor_copy(dst, src, engine=engine.unknown, name=None, dtype=None):
    """`dtype` is not in AWS's signature, but AWS's published matmul tutorial (nki-samples,
    tutorials/matrix_multiplication) passes dtype=dst.dtype: accepted when it names dst's dtype."""
    if dtype is not None and _dt.canonical(dtype) != getattr(dst, "dtype", None):
        raise _DtypeError(f"nisa.tensor_copy: dtype={_dt.name_of(_dt.canonical(dtype))} differs from dst "
                          f"{dst.describe() if hasattr(dst, 'describe') else dst!r}; the copy converts to "
                          f"dst's dtype, so pass no dtype. At {_loc()}")
    if isinstance(dst, _TI) or isinstance(src, _TI):
        _issue(_TensorCopyIndirect(api="nisa.tensor_copy", loc=_loc(), dst=dst, src=src,
                                   engine=_engine(engine, _Engine.VECTOR)))
        return
    _issue(_TensorCopy(api="nisa.tensor_copy", loc=_loc(), dst=dst, src=src,
                         engine=_engine(engine, _Engine.VECTOR)))


def tensor_copy_predicated(dst, src, predicate, reverse_pred=False, name=None):
    _issue(_V.TensorCopyPredicated(api="nisa.tensor_copy_predicated", loc=_loc(), dst=dst, src=src,
                                   predicate=predicate, reverse_pred=bool(reverse_pred)))


def memset(dst, value, engine=engine.unknown, name=None):
    _issue(_Memset(api="nisa.memset", loc=_loc(), dst=dst, value=value, engine=_engine(engine, _Engine.VECTOR)))


def iota(dst, pattern, offset=0, channel_multiplier=0, name=None):
    _issue(_I.Iota(api="nisa.iota", loc=_loc(), dst=dst, pattern=tuple(tuple(p) for p in pattern),
                   offset=int(offset), channel_multiplier=int(channel_multiplier)))


def affine_select(dst, pattern, channel_multiplier, on_true_tile, on_false_value, cmp_op=None, offset=0,
                  name=None):
    _issue(_I.AffineSelect(api="nisa.affine_select", loc=_loc(), dst=dst, on_true=on_true_tile,
                           on_false_value=float(on_false_value), pattern=tuple(tuple(p) for p in pattern),
                           offset=int(offset), channel_multiplier=int(channel_multiplier),
                           cmp_op=_op(cmp_op) if cmp_op is not None else "equal"))


def nc_stream_shuffle(dst, src, shuffle_mask, name=None):
    _issue(_V.NcStreamShuffle(api="nisa.nc_stream_shuffle", loc=_loc(), dst=dst, src=src,
                              shuffle_mask=tuple(int(v) for v in shuffle_mask)))


def nc_n_gather(dst, data, indices, name=None):
    _issue(_G.NcNGather(api="nisa.nc_n_gather", loc=_loc(), dst=dst, data=data, indices=indices))


# --- tensor engine ------------------------------------------------------------------------------------
def nc_matmul(dst, stationary, moving, is_stationary_onezero=False, is_moving_onezero=False,
              is_transpose=False, accumulate=None, tile_position=(), tile_size=(),
              perf_mode=matmul_perf_mode.none, name=None):
    _issue(_MatMul(api="nisa.nc_matmul", loc=_loc(), dst=dst, stationary=stationary, moving=moving,
                     accumulate=accumulate, perf_mode="none" if perf_mode is _PM_NONE else _name(perf_mode),
                     is_transpose=bool(is_transpose),
                     tile_position=tuple(tile_position) if tile_position else (),
                     tile_size=tuple(tile_size) if tile_size else (),
                     onezero=bool(is_stationary_onezero or is_moving_onezero)))


def nc_transpose(dst, data, engine=engine.unknown, name=None):
    """Tensor Engine (SBUF -> PSUM, <= 128x128) or Vector Engine (<= 32x32); unknown picks by buffers and size."""
    if _name(engine) == "unknown":
        small = data.shape[0] <= 32 and data.free_size <= 32
        pe_ok = data.buffer == _SBUF and dst.buffer == _PSUM
        chosen = _Engine.TENSOR if pe_ok or not small else _Engine.VECTOR
    else:
        chosen = _engine(engine, _Engine.TENSOR)
    _issue(_Transpose(api="nisa.nc_transpose", loc=_loc(), dst=dst, src=data, engine=chosen))


# --- scalar engine ------------------------------------------------------------------------------------
def activation(dst, op, data, bias=None, scale=1.0, reduce_op=None, reduce_res=None,
               reduce_cmd=reduce_cmd.idle, engine=engine.scalar, name=None):
    """`engine` (NKI 2.33+) may only name the Scalar Engine here: GpSimd activation (NeuronCore-v4) is
    not modelled."""
    if _name(engine) not in ("scalar", "act", "unknown"):
        raise NotImplementedError(f"nisa.activation on the {_name(engine)} engine is not modelled by trnlab "
                                  f"(only the Scalar Engine). At {_loc()}")
    _issue(_Activation(api="nisa.activation", loc=_loc(), dst=dst, func=_op(op), data=data, bias=bias,
                         scale=scale, reduce_op=_op(reduce_op) if reduce_op is not None else None,
                         reduce_res=reduce_res, reduce_cmd=_name(reduce_cmd)))


def activation_reduce(dst, op, data, reduce_op, reduce_res, bias=None, scale=1.0, name=None):
    _issue(_Activation(api="nisa.activation_reduce", loc=_loc(), dst=dst, func=_op(op), data=data,
                         bias=bias, scale=scale, reduce_op=_op(reduce_op), reduce_res=reduce_res,
                         reduce_cmd="reset_reduce"))


# --- vector engine: elementwise -------------------------------------------------------------------------
_INT32S = (_dt.int32, _dt.uint32)
_ENGINE_UNKNOWN = engine.unknown
_INT32_LIKE: dict = {}      # id(dtype) -> (dtype, dtype in _INT32S): numpy's dtype == is slow (hot)


def _int32_like(dtype) -> bool:
    known = _INT32_LIKE.get(id(dtype))
    if known is None or known[0] is not dtype:
        if len(_INT32_LIKE) >= 256:
            _INT32_LIKE.clear()
        known = _INT32_LIKE[id(dtype)] = (dtype, dtype in _INT32S)
    return known[1]


def _tensor_tensor_engine(engine_arg, op, tiles) -> _Engine:
    """engine=unknown: power runs on GpSimd; all-int32/uint32 operands go to GpSimd unless one is in PSUM."""
    if engine_arg is not _ENGINE_UNKNOWN and _name(engine_arg) != "unknown":
        return _engine(engine_arg, _Engine.VECTOR)
    if op in ("power", "pow"):
        return _Engine.GPSIMD
    for t in tiles:                     # (a loop, not all(): hot for every tensor_tensor)
        if not _int32_like(t.dtype):
            return _Engine.VECTOR
    return _Engine.GPSIMD if not any(t.buffer == _PSUM for t in tiles) else _Engine.VECTOR


def tensor_tensor(dst, data1, data2, op, engine=engine.unknown, name=None):
    op = _op(op)
    _issue(_TensorTensor(api="nisa.tensor_tensor", loc=_loc(), dst=dst, data1=data1, data2=data2, op=op,
                           engine=_tensor_tensor_engine(engine, op, (dst, data1, data2))))


def tensor_scalar(dst, data, op0, operand0, reverse0=False, op1=None, operand1=None, reverse1=False,
                  engine=engine.unknown, name=None):
    _issue(_TensorScalar(api="nisa.tensor_scalar", loc=_loc(), dst=dst, data=data, op0=_op(op0),
                           operand0=operand0, reverse0=reverse0, op1=_op(op1) if op1 is not None else None,
                           operand1=operand1, reverse1=reverse1, engine=_engine(engine, _Engine.VECTOR)))


def tensor_scalar_reduce(dst, data, op0, operand0, reduce_op, reduce_res, reverse0=False,
                         reduce_cmd=reduce_cmd.reset_reduce, reduce_init=None, name=None):
    _issue(_TensorScalar(api="nisa.tensor_scalar_reduce", loc=_loc(), dst=dst, data=data, op0=_op(op0),
                           operand0=operand0, reverse0=reverse0, accum_op=_op(reduce_op), accum_dst=reduce_res,
                           reduce_cmd=_name(reduce_cmd), reduce_init=reduce_init))


def tensor_scalar_cumulative(dst, src, op0, op1, imm0, imm1=None, reduce_cmd=reduce_cmd.reset_reduce,
                             name=None, reverse0=False):
    _issue(_V.TensorScalarCumulative(api="nisa.tensor_scalar_cumulative", loc=_loc(), dst=dst, src=src,
                                     op0=_op(op0), op1=_op(op1), imm0=imm0, imm1=imm1,
                                     reduce_cmd=_name(reduce_cmd), reverse0=bool(reverse0)))


def scalar_tensor_tensor(dst, data, op0, operand0, op1, operand1, reverse0=False, reverse1=False,
                         engine=engine.unknown, name=None):
    _issue(_I.ScalarTensorTensor(api="nisa.scalar_tensor_tensor", loc=_loc(), dst=dst, data=data,
                                 op0=_op(op0), operand0=operand0, op1=_op(op1), operand1=operand1,
                                 reverse0=reverse0, reverse1=reverse1, engine=_engine(engine, _Engine.VECTOR)))


def tensor_tensor_scan(dst, data0, data1, initial, op0, op1, reverse0=False, reverse1=False, name=None):
    _issue(_V.TensorTensorScan(api="nisa.tensor_tensor_scan", loc=_loc(), dst=dst, data0=data0, data1=data1,
                               initial=initial, op0=_op(op0), op1=_op(op1), reverse0=bool(reverse0),
                               reverse1=bool(reverse1)))


def reciprocal(dst, data, name=None):
    _issue(_I.Reciprocal(api="nisa.reciprocal", loc=_loc(), dst=dst, data=data))


def exponential(dst, src, max_value=0.0, reduce_res=None, reduce_cmd=reduce_cmd.idle, reduce_init=0.0,
                name=None):
    _issue(_V.Exponential(api="nisa.exponential", loc=_loc(), dst=dst, src=src, max_value=max_value,
                          reduce_res=reduce_res, reduce_cmd=_name(reduce_cmd), reduce_init=reduce_init))


# --- vector engine: reductions, statistics, top-8 ------------------------------------------------------
def tensor_reduce(dst, op, data, axis, negate=False, keepdims=False, name=None):
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(int(a) % data.ndim for a in axes)
    _issue(_I.TensorReduce(api="nisa.tensor_reduce", loc=_loc(), dst=dst, data=data, op=_op(op),
                           axes=axes, negate=bool(negate)))


def tensor_partition_reduce(dst, op, data, name=None):
    _issue(_G.TensorPartitionReduce(api="nisa.tensor_partition_reduce", loc=_loc(), dst=dst, data=data,
                                    op=_op(op)))


def bn_stats(dst, data, name=None):
    _issue(_V.BnStats(api="nisa.bn_stats", loc=_loc(), dst=dst, data=data))


def bn_aggr(dst, data, name=None):
    _issue(_V.BnAggr(api="nisa.bn_aggr", loc=_loc(), dst=dst, data=data))


def max8(dst, src, name=None):
    _issue(_V.Max8(api="nisa.max8", loc=_loc(), dst=dst, src=src))


def nc_find_index8(dst, data, vals, name=None):
    _issue(_V.NcFindIndex8(api="nisa.nc_find_index8", loc=_loc(), dst=dst, data=data, vals=vals))


def nc_match_replace8(dst, data, vals, imm, dst_idx=None, name=None):
    _issue(_V.NcMatchReplace8(api="nisa.nc_match_replace8", loc=_loc(), dst=dst, data=data, vals=vals,
                              imm=float(imm), dst_idx=dst_idx))


# --- vector engine: selects ---------------------------------------------------------------------------
def select_reduce(dst, predicate, on_true, on_false, reduce_res=None, reduce_cmd=reduce_cmd.idle,
                  reduce_op=None, reverse_pred=False, name=None):
    _issue(_V.SelectReduce(api="nisa.select_reduce", loc=_loc(), dst=dst, predicate=predicate, on_true=on_true,
                           on_false=on_false, reduce_res=reduce_res, reduce_cmd=_name(reduce_cmd),
                           reduce_op=_op(reduce_op) if reduce_op is not None else "maximum",
                           reverse_pred=bool(reverse_pred)))


def range_select(dst, on_true_tile, comp_op0, comp_op1, bound0, bound1, reduce_cmd=reduce_cmd.reset_reduce,
                 reduce_res=None, reduce_op=None, range_start=0, on_false_value=_V.FP32_MIN, name=None):
    _issue(_V.RangeSelect(api="nisa.range_select", loc=_loc(), dst=dst, on_true=on_true_tile,
                          comp_op0=_op(comp_op0), comp_op1=_op(comp_op1), bound0=bound0, bound1=bound1,
                          reduce_cmd=_name(reduce_cmd), reduce_res=reduce_res,
                          reduce_op=_op(reduce_op) if reduce_op is not None else "maximum",
                          range_start=int(range_start), on_false_value=float(on_false_value)))


# --- random numbers -----------------------------------------------------------------------------------
def dropout(dst, data, prob, name=None):
    _issue(_R.Dropout(api="nisa.dropout", loc=_loc(), dst=dst, data=data, prob=prob))


def rng(dst, engine=engine.unknown, name=None):
    _issue(_R.Rand(api="nisa.rng", loc=_loc(), dst=dst, mode="bits", engine=_engine(engine, _Engine.VECTOR)))


def rand2(dst, min, max, name=None):  # noqa: A002  (AWS's parameter names)
    _issue(_R.Rand(api="nisa.rand2", loc=_loc(), dst=dst, mode="uniform", low=min, high=max))


def set_rng_seed(src_seeds, name=None):
    _issue(_R.SetRngSeed(api="nisa.set_rng_seed", loc=_loc(), src_seeds=src_seeds))


def rand_set_state(src_seeds, engine=engine.unknown, name=None):
    _issue(_R.RandSetState(api="nisa.rand_set_state", loc=_loc(), src_seeds=src_seeds,
                           engine=_engine(engine, _Engine.GPSIMD)))


def rand_get_state(dst, engine=engine.unknown, name=None):
    _issue(_R.RandGetState(api="nisa.rand_get_state", loc=_loc(), dst=dst, engine=_engine(engine, _Engine.GPSIMD)))


# --- gpsimd ---------------------------------------------------------------------------------------------
def nonzero_with_count(dst, src, index_offset=0, padding_val=-1, name=None):
    _issue(_G.NonzeroWithCount(api="nisa.nonzero_with_count", loc=_loc(), dst=dst, src=src,
                               index_offset=int(index_offset), padding_val=int(padding_val)))


# --- LNC synchronisation (programs of kernel[2] run as threads: trnlab.core.lnc) ------------------------
def _lnc_group(api: str, loc: str):
    from trnlab.core import lnc
    m = _current()
    if m.chip.nc_version < 3:
        raise _NkiValidationError(f"{api} is available on NeuronCore-v3 or newer (trn2+), not {m.chip.name}. "
                                  f"At {loc}")
    group = lnc.group_of(m)
    if group is None:
        if int(np.prod(m.num_programs)) == 1:
            raise _NkiValidationError(f"{api} synchronises the NeuronCores of an LNC launch; this kernel runs "
                                      f"as a single program (launch it as kernel[2]). At {loc}")
        raise lnc.SyncError(f"{api}: this launch runs its programs in order on one machine; pass "
                            f"nki.jit(..., lnc_threads=True) so that they run as threads. At {loc}")
    return group, lnc.rank_of(m)


def _rank(value, name: str, api: str, n: int, loc: str) -> int:
    r = int(value)
    if not 0 <= r < min(n, 2):
        raise _NkiValidationError(f"{api}: {name}={value} must be 0 or 1 (a NeuronCore of this "
                                  f"{n}-program launch). At {loc}")
    return r


def core_barrier(data, cores, engine=engine.unknown, name=None):
    """Every core in `cores` waits here until all of them arrive (after writing their part of the shared-HBM
    tensor `data`). In the timing model each core resumes at the last arrival."""
    api, loc = "nisa.core_barrier", _loc()
    group, rank = _lnc_group(api, loc)
    cores = tuple(int(c) for c in cores)
    if cores != (0, 1):
        raise _NkiValidationError(f"{api}: only cores=(0, 1) is supported, got {cores}. At {loc}")
    if getattr(data, "buffer", None) != _HBM:
        raise _NkiValidationError(f"{api}: data must be a shared-HBM tensor, got "
                                  f"{data.describe() if hasattr(data, 'describe') else data!r}. At {loc}")
    _rank(rank, "program", api, group.n, loc)
    group.barrier(("core_barrier", cores), rank, cores, api, loc)


def sendrecv(src, dst, send_to_rank, recv_from_rank, pipe_id, dma_engine=None, name=None):  # noqa: F811 (AWS's parameter name)
    """Send the SBUF tile src to dst of core send_to_rank while receiving core recv_from_rank's src into
    this core's dst (a DMA issued on the receiving core). Returns once both transfers are done."""
    api, loc = "nisa.sendrecv", _loc()
    group, rank = _lnc_group(api, loc)
    to = _rank(send_to_rank, "send_to_rank", api, group.n, loc)
    frm = _rank(recv_from_rank, "recv_from_rank", api, group.n, loc)
    for what, t in (("src", src), ("dst", dst)):
        if getattr(t, "buffer", None) != _SBUF:
            raise _NkiValidationError(f"{api}: {what} must be an SBUF tile, got "
                                      f"{t.describe() if hasattr(t, 'describe') else t!r}. At {loc}")
    m = _current()
    sent = group.post(pipe_id, rank, to, src)
    counters = m.__dict__.setdefault("lnc_recv_seq", {})
    seq = counters.get((pipe_id, frm), 0)
    counters[(pipe_id, frm)] = seq + 1
    got, peer_src = group.receive(pipe_id, frm, rank, seq, api, loc)
    try:
        if tuple(peer_src.shape) != tuple(dst.shape) or peer_src.dtype != dst.dtype:
            raise _NkiValidationError(f"{api}: program {frm} sends {peer_src.describe()} but program {rank} "
                                      f"receives into {dst.describe()}; shapes and dtypes must match. At {loc}")
        _issue(_DmaCopy(api=api, loc=loc, dst=dst, src=peer_src))
    finally:
        group.consumed(got)
    group.wait_consumed(sent, rank, api, loc)


def _not_modelled(api: str):
    raise NotImplementedError(f"nki.isa.{api} is not modelled by trnlab. At {_loc()}")


# AWS APIs trnlab does not model, with AWS's signatures (so a misspelt keyword is still reported as such).
def nc_matmul_mx(dst, stationary, moving, stationary_scale, moving_scale, tile_position=None, tile_size=None,
                 accumulate=None, name=None):
    _not_modelled("nc_matmul_mx")


def quantize_mx(dst, src, dst_scale, name=None):
    _not_modelled("quantize_mx")


def dma_compute(dst, srcs, reduce_op, scales=None, unique_indices=True, oob_mode=oob_mode.error, name=None):
    _not_modelled("dma_compute")


def register_alloc(x=None):
    _not_modelled("register_alloc")


def register_move(dst, src):
    _not_modelled("register_move")


def register_load(dst, src):
    _not_modelled("register_load")


def register_store(dst, src):
    _not_modelled("register_store")


def activate2(dst, op, data, imm0, imm1, op0, op1, relu_param=0.0, reverse0=False, reverse1=False,
              reduce_op=None, reduce_res=None, reduce_cmd=reduce_cmd.idle, name=None):
    _not_modelled("activate2")


def local_gather(dst, src_buffer, index, num_elem_per_idx=1, num_valid_indices=None, name=None):
    _not_modelled("local_gather")


def sequence_bounds(dst, segment_ids, name=None):
    _not_modelled("sequence_bounds")


def _public_functions(namespace: dict) -> list[str]:
    return [k for k, v in namespace.items() if not k.startswith("_") and inspect.isfunction(v)
            and v.__module__ == __name__]


_check_module(globals(), "nisa", _public_functions(globals()))
