"""Shared translation helpers of the Beta 1 front end: allocation, operand preparation, dtype
promotion, and the instruction sequences behind element-wise calls. Every value is computed by an
ISA instruction issued to the current Machine."""
from __future__ import annotations

import itertools
import weakref

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.machine import current
from trnlab.core.srcloc import user_location
from trnlab.core.tensor import HBM, PSUM, SBUF, Tensor
from trnlab.errors import NkiValidationError, PartitionError, ShapeError
from trnlab.isa import instructions as I
from trnlab.isa.alu import op_name
from trnlab.isa.base import Engine
from trnlab.nki_beta1.tile import (Access, Pending, Region, Tile, _compiler_placed, as_view, cut, flush,
                                  free_boxes)

_names = itertools.count(1)


def issue(ins) -> None:
    current().issue(ins)


def isa_class(name: str, api: str):
    """An ISA instruction class, or NotImplementedError naming the API when trnlab lacks it."""
    import trnlab.isa as isa_pkg
    cls = getattr(isa_pkg, name, None)
    if cls is None:
        raise NotImplementedError(f"{api} is not modelled by trnlab yet (no ISA instruction {name}). "
                                  f"At {user_location()}")
    return cls


# --- tiles ----------------------------------------------------------------------------------------
def alloc(kind: str, shape, dtype, api: str, name: str = "", loc: str | None = None, *, address=None,
          footprint=None) -> Tile:
    loc = loc or user_location()
    m = current()
    name = name or f"{api.split('.')[-1]}_{next(_names)}"
    shape = tuple(int(s) for s in shape)
    if kind == HBM:
        t = m.new_hbm(shape, dtype, name)
    else:
        t = m.new_onchip(kind, shape, dtype, name, api=api, loc=loc, address=address, footprint=footprint)
    return t if isinstance(t, Tile) else Tile(t.storage, t.array, t.dtype, t.name)


def tile_of(x, api: str = "operand"):
    """A Tile for an operand (issuing a pending result); scalars pass through."""
    if isinstance(x, Pending):
        return x.materialize()
    if isinstance(x, Access):
        return x.view(None)
    if isinstance(x, Tile):
        return x
    if isinstance(x, Tensor):
        return Tile(x.storage, x.array, x.dtype, x.name)
    return as_view(x, api)


def real_tile(x, api: str, loc: str) -> Tile:
    """An engine operand must be a [P, ...] tile, not a par_dim block tensor."""
    t = tile_of(x, api)
    if isinstance(t, Tile) and t.par_axis != 0:
        raise NkiValidationError(f"{api}: Failed to infer tile from tensor `{t.name}` {list(t.shape)}: its "
                                 f"partition dim is dim {t.par_axis}; index the block dims first "
                                 f"(err_failed_to_infer_tile_from_local_tensor). At {loc}")
    return t


def is_tile(x) -> bool:
    return isinstance(x, (Tensor, Pending, Access))


def scalar(x):
    if isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    return float(x)


# --- dtypes ---------------------------------------------------------------------------------------
def promote(*xs):
    """NKI type promotion: the widest input dtype; floats beat integers; bf16 with fp16 -> fp32."""
    dts = [dt.canonical(x.dtype) for x in xs if is_tile(x)]
    if not dts:
        return dt.float32
    floats = [d for d in dts if dt.is_float(d)]
    if floats:
        best = max(floats, key=dt.itemsize)
        if any(dt.itemsize(d) == dt.itemsize(best) and d != best for d in floats):
            return dt.float32
        return best
    if any(isinstance(x, float) for x in xs if not is_tile(x)):
        return dt.float32
    return max(dts, key=dt.itemsize)


def out_dtype(dtype, *xs):
    return dt.canonical(dtype) if dtype is not None else promote(*xs)


# --- element-wise translation -----------------------------------------------------------------------
def bshape(*xs) -> tuple:
    shapes = [tuple(x.shape) for x in xs if is_tile(x)]
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(f"operand shapes {[list(s) for s in shapes]} do not broadcast. At {user_location()}") from None


def partition_broadcast(x: Tile, p: int, api: str, loc: str) -> Tile:
    """A [1, F] tile copied onto p partitions (the DMA engines read the row p times)."""
    out = alloc(SBUF, (p,) + tuple(x.shape[1:]), x.dtype, api, loc=loc)
    src = Tensor.broadcast_to(x, out.shape)             # the DMA's zero-stride source, not tile.broadcast_to
    issue(I.DmaCopy(api=api, loc=loc, dst=out, src=src))
    return out


# --- tile.broadcast_to on the Tensor engine (CompilerModel.pe_broadcast) ------------------------------
PE_DTYPES = (dt.float32, dt.bfloat16, dt.float16)
_ones: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()    # machine -> {(dtype, M): ones row}


def pe_broadcastable(x: Tile, shape: tuple) -> bool:
    """tile.broadcast_to((M, F)) of an on-chip [1, F] tile of a matmul dtype, 1 < M <= pmax."""
    m = current()
    return (m.compiler.pe_broadcast and isinstance(x, Tile) and x.buffer == SBUF and x.par_axis == 0
            and x.ndim == 2 and len(shape) == 2 and x.shape[0] == 1 and 1 < shape[0] <= m.chip.partitions
            and x.shape[1] == shape[1] and x.dtype in PE_DTYPES)


def _ones_row(dtype, p: int, loc: str) -> Tile:
    """The [1, p] ones stationary of the broadcast matmuls: a compiler constant, set once per kernel."""
    cache = _ones.setdefault(current(), {})
    if (dtype, p) not in cache:
        site = f"{loc} (broadcast_to ones)"      # its own allocation site (memory._reclaim_previous_instance)
        ones = alloc(SBUF, (1, p), dtype, "nl.broadcast_to", loc=site)
        issue(I.Memset(api="nl.broadcast_to", loc=loc, dst=ones, value=1.0))
        cache[(dtype, p)] = ones
    return cache[(dtype, p)]


def pe_broadcast(x: Tile, shape: tuple, loc: str) -> Tile:
    """x [1, F] onto shape[0] partitions by nc_matmul(ones[1, M], x, is_stationary_onezero=True) (ARCH v2,
    TensorE "Alternative Use Case": NKI invokes such a matmul under the hood for broadcast_to). The PE
    writes fp32 PSUM, and a PSUM tile holds at most psum_fmax = 512 columns (one bank; aws-neuron-sdk@3eaf01ad
    programming model TC#2): an fp32 row of <= 512 columns is returned as that PSUM tile, anything else is
    assembled in an SBUF tile of x's dtype, one <= 512-column matmul and PSUM -> SBUF copy at a time."""
    api = "nl.broadcast_to"
    p, f = shape
    ones = _ones_row(x.dtype, p, loc)
    site = f"{loc} (broadcast_to)"          # its own allocation site, apart from the consumer's result on that line
    bank = current().chip.psum_bank_fmax
    if x.dtype == dt.float32 and f <= bank:
        out = alloc(PSUM, shape, dt.float32, api, loc=site)
        _compiler_placed.add(out.storage)
        issue(I.MatMul(api=api, loc=loc, dst=out, stationary=ones, moving=x, accumulate=False, onezero=True))
        return out
    out = alloc(SBUF, shape, x.dtype, api, loc=site)
    for j in range(0, f, bank):
        w = min(bank, f - j)
        part = alloc(PSUM, (p, w), dt.float32, api, loc=site)
        issue(I.MatMul(api=api, loc=loc, dst=part, stationary=ones, moving=x._view(x.array[:, j:j + w]),
                       accumulate=False, onezero=True))
        issue(I.TensorCopy(api=api, loc=loc, dst=out._view(out.array[:, j:j + w]), src=part))
    return out


def _free_scalar(t: Tile) -> bool:
    return t.free_size == 1


def binary_into(dst: Tile, a, b, op, loc: str, api: str | None = None, mask=None, engine=None) -> None:
    """dst = a op b with broadcasting: TensorTensor, or TensorScalar for scalars and [P, 1] vectors."""
    op = op_name(op)
    api = api or f"nl.{op}"
    shape = tuple(dst.shape)
    region = Region.of(mask, shape, loc)
    if region is not None and region.empty:
        return
    a = real_tile(a, api, loc) if is_tile(a) else scalar(a)
    b = real_tile(b, api, loc) if is_tile(b) else scalar(b)
    p = shape[0]
    if isinstance(a, Tile) and a.shape[0] == 1 and p > 1:
        a = partition_broadcast(a, p, api, loc)
    if isinstance(b, Tile) and b.shape[0] == 1 and p > 1:
        b = partition_broadcast(b, p, api, loc)
    residual = region.residual if region is not None else None
    d = cut(dst, region, shape)
    a, b = cut(a, region, shape), cut(b, region, shape)
    kw = dict(api=api, loc=loc, mask=residual)
    if isinstance(a, Tile) and isinstance(b, Tile):
        if _free_scalar(b) and not _free_scalar(a):
            issue(I.TensorScalar(dst=d, data=a, op0=op, operand0=b, engine=engine or Engine.VECTOR, **kw))
        elif _free_scalar(a) and not _free_scalar(b):
            issue(I.TensorScalar(dst=d, data=b, op0=op, operand0=a, reverse0=True,
                                 engine=engine or Engine.VECTOR, **kw))
        else:
            a = _expand(a, d.shape)
            b = _expand(b, d.shape)
            eng = engine or (Engine.GPSIMD if dt.is_int(a.dtype) and dt.is_int(b.dtype) and
                             PSUM not in (a.buffer, b.buffer, d.buffer) and op not in _BITVEC
                             else Engine.VECTOR)
            issue(I.TensorTensor(dst=d, data1=a, data2=b, op=op, engine=eng, **kw))
    elif isinstance(a, Tile):
        issue(I.TensorScalar(dst=d, data=_expand(a, d.shape), op0=op, operand0=b,
                             engine=engine or Engine.VECTOR, **kw))
    elif isinstance(b, Tile):
        issue(I.TensorScalar(dst=d, data=_expand(b, d.shape), op0=op, operand0=a, reverse0=True,
                             engine=engine or Engine.VECTOR, **kw))
    else:
        raise NkiValidationError(f"{api}: at least one operand must be a tile. At {loc}")


_BITVEC = {"bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift", "logical_shift_left",
           "logical_shift_right", "arith_shift_right"}


def _expand(t: Tile, shape: tuple) -> Tile:
    """A free-dim broadcast view (stride 0) so both operands cover the iteration space."""
    if tuple(t.shape) == tuple(shape) or t.size == int(np.prod(shape)):
        return t
    try:
        return t._view(np.broadcast_to(t.array, shape))
    except ValueError:
        raise ShapeError(f"operand `{t.name}` {list(t.shape)} does not broadcast to the result shape {list(shape)}. "
                         f"At {user_location()}") from None


def activation_into(dst: Tile, func: str, x, loc: str, api: str, mask=None, bias=None, scale=1.0) -> None:
    shape = tuple(dst.shape)
    region = Region.of(mask, shape, loc)
    if region is not None and region.empty:
        return
    x = real_tile(x, api, loc)
    issue(I.Activation(api=api, loc=loc, dst=cut(dst, region, shape), func=func, data=cut(x, region, shape),
                       bias=cut(bias, region, shape) if isinstance(bias, Tile) else bias,
                       scale=cut(scale, region, shape) if isinstance(scale, Tile) else scale,
                       mask=region.residual if region is not None else None))


def copy_into(dst: Tile, src, loc: str, api: str, mask=None, engine=None) -> None:
    """dst = src: DMA when either side is in HBM, otherwise an engine copy."""
    shape = tuple(dst.shape)
    region = Region.of(mask, shape, loc)
    if region is not None and region.empty:
        return
    src = real_tile(src, api, loc)
    d, s = cut(dst, region, shape), cut(src, region, shape)
    residual = region.residual if region is not None else None
    if HBM in (d.buffer, s.buffer):
        if s.buffer == PSUM:
            s = _to_sbuf(s, api, loc)
        issue(I.DmaCopy(api=api, loc=loc, dst=d, src=_expand(s, d.shape), mask=residual))
    else:
        if s.shape[0] == 1 and d.shape[0] > 1:
            s = partition_broadcast(s, d.shape[0], api, loc)
        issue(I.TensorCopy(api=api, loc=loc, dst=d, src=_expand(s, d.shape), mask=residual,
                           engine=engine or Engine.VECTOR))


def masked_gather(src, mask: np.ndarray, fill: float, api: str, loc: str) -> Tile:
    """An fp32 SBUF copy of src (a Tile or an Access whose masked-out indices may lie out of bounds) with
    `fill` where the mask is False: a memset, then one copy per rectangular piece of the mask. A reduction
    of the copy then sees only the elements the mask keeps (fill = the reducer's identity)."""
    shape = tuple(src.shape)
    out = alloc(SBUF, shape, dt.float32, api, loc=loc)
    issue(I.Memset(api=api, loc=loc, dst=out, value=fill))
    for box, rows in free_boxes(np.broadcast_to(mask, shape)):
        where = None if rows is None else np.broadcast_to(rows.reshape((-1,) + (1,) * (len(shape) - 1)),
                                                           tuple(s.stop - s.start for s in box))
        piece = src.cut(box).view(where) if isinstance(src, Access) else src._view(src.array[box])
        issue(I.TensorCopy(api=api, loc=loc, dst=out._view(out.array[box]), src=piece, mask=where,
                           engine=Engine.VECTOR))
    return out


def _to_sbuf(t: Tile, api: str, loc: str) -> Tile:
    out = alloc(SBUF, t.shape, t.dtype, api, loc=loc)
    issue(I.TensorCopy(api=api, loc=loc, dst=out, src=t))
    return out


def to_sbuf(t: Tile, api: str, loc: str) -> Tile:
    return _to_sbuf(t, api, loc) if t.buffer == PSUM else t


def assign(dst: Tile, value, loc: str) -> None:
    """t[...] = value: a tile is copied, a scalar memsets."""
    api = "tensor assignment"
    if is_tile(value):
        copy_into(dst, value, loc, api)
    elif isinstance(value, np.ndarray):
        raise NkiValidationError(f"{api}: cannot assign a host numpy array to `{dst.name}` inside a kernel; "
                                 f"use nl.shared_constant or nl.load. At {loc}")
    elif dst.buffer == HBM:
        raise NkiValidationError(f"{api}: cannot memset HBM tensor `{dst.name}`; store a tile. At {loc}")
    else:
        issue(I.Memset(api=api, loc=loc, dst=dst, value=scalar(value)))


def new_result(shape, dtype, kind: str, emit, api: str, **kw) -> Pending:
    return Pending(shape, dtype, kind, emit, api, **kw)


def check_partitions(shape, api: str, loc: str) -> None:
    if len(shape) and shape[0] > current().chip.partitions:
        raise PartitionError(f"{api}: number of partitions {shape[0]} exceed architecture limitation of "
                             f"{current().chip.partitions}. At {loc}")


__all__ = ["alloc", "tile_of", "real_tile", "binary_into", "activation_into", "copy_into", "assign", "flush",
           "new_result", "promote", "out_dtype", "bshape", "issue", "isa_class", "to_sbuf"]
