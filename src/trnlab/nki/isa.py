"""nki.isa for the current NKI front end: destination-first calls that issue ISA instructions."""
from __future__ import annotations

import enum

import numpy as np

from trnlab.core.machine import current as _current
from trnlab.core.srcloc import user_location as _loc
from trnlab.errors import NkiValidationError as _NkiValidationError
from trnlab.isa import instructions as _I
from trnlab.isa.alu import op_name as _op
from trnlab.isa.base import Engine as _Engine


# --- engines and enums ------------------------------------------------------------------------------
class engine(enum.Enum):
    unknown = "unknown"
    tensor = "tensor"
    vector = "vector"
    scalar = "scalar"
    gpsimd = "gpsimd"
    dma = "dma"
    sync = "sync"


tensor_engine = engine.tensor
vector_engine = engine.vector
scalar_engine = engine.scalar
gpsimd_engine = engine.gpsimd
dma_engine = engine.dma
unknown_engine = engine.unknown


class oob_mode(enum.Enum):
    error = "error"
    skip = "skip"


class dge_mode(enum.Enum):
    unknown = "unknown"
    none = "none"
    swdge = "swdge"
    hwdge = "hwdge"


class reduce_cmd(enum.Enum):
    idle = "idle"
    reset = "reset"
    reduce = "reduce"
    reset_reduce = "reset_reduce"
    load_reduce = "load_reduce"


class matmul_perf_mode(enum.Enum):
    none = "none"
    double_row = "double_row"
    double_row_gen3 = "double_row"


class nc_version(enum.IntEnum):
    gen2 = 2
    gen3 = 3
    gen4 = 4


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


def _name(x) -> str:
    return x.value if isinstance(x, enum.Enum) else str(x)


def _issue(instr) -> None:
    _current().issue(instr)


# --- data movement ------------------------------------------------------------------------------------
def dma_copy(dst, src, oob_mode=oob_mode.error, dge_mode=dge_mode.unknown, name: str = "", **_):
    _issue(_I.DmaCopy(api="nisa.dma_copy", loc=_loc(), dst=dst, src=src,
                      raw_bytes=_name(dge_mode) == "hwdge"))


def dma_transpose(dst, src, axes=None, **_):
    axes = tuple(axes) if axes is not None else tuple(reversed(range(src.ndim)))
    _issue(_I.DmaTranspose(api="nisa.dma_transpose", loc=_loc(), dst=dst, src=src, axes=axes))


def tensor_copy(dst, src, engine=engine.unknown, name: str = "", **_):
    _issue(_I.TensorCopy(api="nisa.tensor_copy", loc=_loc(), dst=dst, src=src,
                         engine=_engine(engine, _Engine.VECTOR)))


def memset(dst, value, engine=engine.unknown, name: str = "", **_):
    _issue(_I.Memset(api="nisa.memset", loc=_loc(), dst=dst, value=value, engine=_engine(engine, _Engine.VECTOR)))


def iota(dst, pattern, offset=0, channel_multiplier=0, **_):
    _issue(_I.Iota(api="nisa.iota", loc=_loc(), dst=dst, pattern=tuple(tuple(p) for p in pattern),
                   offset=int(offset), channel_multiplier=int(channel_multiplier)))


def affine_select(dst, pattern, channel_multiplier, on_true_tile, on_false_value, cmp_op=None, offset=0, **_):
    _issue(_I.AffineSelect(api="nisa.affine_select", loc=_loc(), dst=dst, on_true=on_true_tile,
                           on_false_value=float(on_false_value), pattern=tuple(tuple(p) for p in pattern),
                           offset=int(offset), channel_multiplier=int(channel_multiplier),
                           cmp_op=_op(cmp_op) if cmp_op is not None else "equal"))


# --- tensor engine ------------------------------------------------------------------------------------
def nc_matmul(dst, stationary, moving, is_stationary_onezero=False, is_moving_onezero=False,
              is_transpose=False, accumulate=None, tile_position=(), tile_size=(),
              perf_mode=matmul_perf_mode.none, **_):
    _issue(_I.MatMul(api="nisa.nc_matmul", loc=_loc(), dst=dst, stationary=stationary, moving=moving,
                     accumulate=accumulate, perf_mode=_name(perf_mode), is_transpose=bool(is_transpose)))


def nc_transpose(dst, data, engine=engine.unknown, **_):
    _issue(_I.Transpose(api="nisa.nc_transpose", loc=_loc(), dst=dst, src=data,
                        engine=_engine(engine, _Engine.TENSOR)))


# --- vector / scalar ----------------------------------------------------------------------------------
def activation(dst, op, data, bias=None, scale=1.0, reduce_op=None, reduce_res=None,
               reduce_cmd=reduce_cmd.idle, alpha=0.0, **_):
    _issue(_I.Activation(api="nisa.activation", loc=_loc(), dst=dst, func=_op(op), data=data, bias=bias,
                         scale=scale, reduce_op=_op(reduce_op) if reduce_op is not None else None,
                         reduce_res=reduce_res, reduce_cmd=_name(reduce_cmd), alpha=float(alpha)))


def activation_reduce(dst, op, data, reduce_op, reduce_res, bias=None, scale=1.0, **_):
    _issue(_I.Activation(api="nisa.activation_reduce", loc=_loc(), dst=dst, func=_op(op), data=data,
                         bias=bias, scale=scale, reduce_op=_op(reduce_op), reduce_res=reduce_res,
                         reduce_cmd="reset_reduce"))


def tensor_tensor(dst, data1, data2, op, engine=engine.unknown, **_):
    _issue(_I.TensorTensor(api="nisa.tensor_tensor", loc=_loc(), dst=dst, data1=data1, data2=data2,
                           op=_op(op), engine=_engine(engine, _Engine.VECTOR)))


def tensor_scalar(dst, data, op0, operand0, reverse0=False, op1=None, operand1=None, reverse1=False,
                  engine=engine.unknown, **_):
    _issue(_I.TensorScalar(api="nisa.tensor_scalar", loc=_loc(), dst=dst, data=data, op0=_op(op0),
                           operand0=operand0, reverse0=reverse0, op1=_op(op1) if op1 is not None else None,
                           operand1=operand1, reverse1=reverse1, engine=_engine(engine, _Engine.VECTOR)))


def tensor_scalar_reduce(dst, data, op0, operand0, reduce_op, reduce_res, reverse0=False, **_):
    _issue(_I.TensorScalar(api="nisa.tensor_scalar_reduce", loc=_loc(), dst=dst, data=data, op0=_op(op0),
                           operand0=operand0, reverse0=reverse0, accum_op=_op(reduce_op), accum_dst=reduce_res))


def scalar_tensor_tensor(dst, data, op0, operand0, op1, operand1, reverse0=False, reverse1=False,
                         engine=engine.unknown, **_):
    _issue(_I.ScalarTensorTensor(api="nisa.scalar_tensor_tensor", loc=_loc(), dst=dst, data=data,
                                 op0=_op(op0), operand0=operand0, op1=_op(op1), operand1=operand1,
                                 reverse0=reverse0, reverse1=reverse1, engine=_engine(engine, _Engine.VECTOR)))


def tensor_reduce(dst, op, data, axis, negate=False, keepdims=False, **_):
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(int(a) % data.ndim for a in axes)
    _issue(_I.TensorReduce(api="nisa.tensor_reduce", loc=_loc(), dst=dst, data=data, op=_op(op),
                           axes=axes, negate=bool(negate)))


def reciprocal(dst, data, **_):
    _issue(_I.Reciprocal(api="nisa.reciprocal", loc=_loc(), dst=dst, data=data))


def _not_modelled(name):
    def fn(*args, **kwargs):
        raise NotImplementedError(f"nki.isa.{name} is not modelled by trnlab. At {_loc()}")
    fn.__name__ = name
    return fn


for _api in ("sendrecv", "core_barrier", "nc_matmul_mx", "quantize_mx", "dma_compute", "register_alloc",
             "register_move", "register_load", "register_store", "nonzero_with_count", "exponential",
             "activate2", "topk", "local_gather", "nc_n_gather", "sequence_bounds", "rng", "rand2",
             "set_rng_seed", "nc_stream_shuffle"):
    if _api not in globals():
        globals()[_api] = _not_modelled(_api)
