"""neuronxcc.nki.language (Beta 1): tile-returning calls translated into ISA instructions.

Every call returns a new tile (with no explicit dtype it keeps the input dtype, or the widest of
the inputs) and accepts `mask=` (a predicate over the call's iteration space)."""
from __future__ import annotations

import contextlib
import linecache
import re
import sys
import weakref

import numpy as np

from trnlab.core import dtypes as _dt
from trnlab.core.machine import current as _current
from trnlab.core.srcloc import user_location as _loc
from trnlab.core.tensor import HBM as _HBM, PSUM as _PSUM, SBUF as _SBUF, Tensor as _Tensor
from trnlab.frontend.buffers import hbm, private_hbm, psum, sbuf, shared_hbm  # noqa: F401
from trnlab.frontend import spmd as _spmd
from trnlab.errors import BufferKindError as _BufferKindError, NkiValidationError as _NkiValidationError
from trnlab.errors import ShapeError as _ShapeError
from trnlab.isa import instructions as _I
from trnlab.isa.alu import op_name as _op
from trnlab.nki_beta1 import ops as _ops
from trnlab.nki_beta1.index import Index, Predicate, arange, mgrid  # noqa: F401
from trnlab.nki_beta1.tile import (Access as _Access, DynSlice, IndirectAccess as _IndirectAccess, Pending as _Pending,
                                   Region as _Region, Tile, cut as _cut, flush as _flush)

# --- dtypes ---------------------------------------------------------------------------------------
bool_ = _dt.bool_
int8, int16, int32 = _dt.int8, _dt.int16, _dt.int32
uint8, uint16, uint32 = _dt.uint8, _dt.uint16, _dt.uint32
float16 = _dt.float16
bfloat16 = _dt.bfloat16
float32 = _dt.float32
tfloat32 = _dt.tfloat32
float8_e4m3 = _dt.float8_e4m3
float8_e5m2 = _dt.float8_e5m2
float8_e4m3fn = _dt.float8_e4m3fn


class _FloatInfo:
    """nl.fp32: the float32 dtype with finfo fields (nl.fp32.min is the most negative float32)."""
    name = "float32"
    min = float(np.finfo(np.float32).min)
    max = float(np.finfo(np.float32).max)
    tiny = float(np.finfo(np.float32).tiny)
    eps = float(np.finfo(np.float32).eps)
    itemsize = 4

    def __repr__(self):
        return "nl.fp32"


fp32 = _FloatInfo()


def finfo(dtype):
    """Machine limits of an NKI float dtype (nl.finfo(nl.bfloat16).min ...), as numpy/ml_dtypes report them."""
    import ml_dtypes
    d = _dt.canonical(dtype)
    if d is _dt.tfloat32:
        d = _dt.float32
    return ml_dtypes.finfo(d)


def iinfo(dtype):
    """Machine limits of an NKI integer dtype."""
    return np.iinfo(_dt.canonical(dtype))


# --- buffers --------------------------------------------------------------------------------------
# nl.sbuf, nl.psum, nl.hbm, nl.shared_hbm, nl.private_hbm: trnlab.frontend.buffers (shared by both front ends)


def _kind(buffer) -> str:
    if buffer is None:
        return _SBUF
    kind = getattr(buffer, "kind", None)
    if kind in (_SBUF, _PSUM, _HBM):
        return kind
    if isinstance(buffer, str) and buffer in ("sbuf", "psum", "hbm", "shared_hbm", "private_hbm"):
        return {"shared_hbm": _HBM, "private_hbm": _HBM}.get(buffer, buffer)
    raise _NkiValidationError(f"buffer must be nl.sbuf, nl.psum, nl.hbm, nl.shared_hbm, nl.private_hbm or an "
                              f"ncc allocation, got {buffer!r}. At {_loc()}")


# --- tile sizes -----------------------------------------------------------------------------------
class _TileSize:
    pmax = 128
    psum_fmax = 512
    gemm_stationary_fmax = 128
    gemm_moving_fmax = 512
    bn_stats_fmax = 512
    psum_num_banks = 8

    @property
    def total_available_sbuf_size(self) -> int:
        from trnlab.hw import get_chip
        return get_chip().sbuf_bytes_per_partition


tile_size = _TileSize()


class _Constants:
    @staticmethod
    def sizeinbytes(dtype) -> int:
        return _dt.itemsize(_dt.canonical(dtype))


constants = _Constants()


# --- index helpers, loops, SPMD -------------------------------------------------------------------
class par_dim:  # noqa: N801  (NKI name)
    """nl.par_dim(n): marks the partition dim of a block tensor (B, par_dim(128), F)."""

    def __init__(self, size):
        self.size = int(size)

    def __index__(self):
        return self.size

    __int__ = __index__

    def __repr__(self):
        return f"par_dim({self.size})"


def ds(start, size, step=1) -> DynSlice:
    return DynSlice(start, size, step)


def affine_range(*args, **_):
    return range(*[int(a) for a in args])


def sequential_range(*args, **_):
    return range(*[int(a) for a in args])


def static_range(*args, **_):
    return range(*[int(a) for a in args])


def program_id(axis: int = 0) -> int:
    pid = _current().program_id
    return int(pid[axis]) if axis < len(pid) else 0


num_programs = _spmd.num_programs
program_ndim = _spmd.program_ndim


class nc:  # noqa: N801
    """nl.nc(n): NeuronCores for nl.spmd_dim (programs still run one after another)."""

    def __init__(self, n):
        self.n = int(n)


class spmd_dim:  # noqa: N801
    """kernel[nl.spmd_dim(4, nl.nc(2))]: a grid dimension of 4 programs."""

    def __init__(self, size, *args, **kwargs):
        self.size = int(size if not isinstance(size, spmd_dim) else size.size)

    def __index__(self):
        return self.size

    __int__ = __index__


# --- tensor creation ------------------------------------------------------------------------------
def _shape(shape):
    shape = shape if isinstance(shape, (tuple, list)) else (shape,)
    par = [i for i, s in enumerate(shape) if isinstance(s, par_dim)]
    return tuple(int(s) for s in shape), (par[0] if par else 0)


def _create(shape, dtype, buffer, name, api) -> Tile:
    loc = _loc()
    _flush()
    shape, par_axis = _shape(shape)
    kind = _kind(buffer)
    if kind == _HBM:
        return _shared_hbm(shape, dtype, buffer, name, api, loc)
    storage_shape = (shape[par_axis],) + shape[:par_axis] + shape[par_axis + 1:]
    address, footprint = None, None
    if hasattr(buffer, "psum_placement"):
        chip = _current().chip
        address, footprint = buffer.psum_placement(shape, par_axis, _dt.itemsize(_dt.canonical(dtype)),
                                                     chip.psum_bank_bytes)
    t = _ops.alloc(kind, storage_shape, dtype, api, name, loc, address=address, footprint=footprint)
    if par_axis:
        return Tile(t.storage, np.moveaxis(t.array, 0, par_axis), t.dtype, t.name, par_axis)
    return t


_programs = weakref.WeakKeyDictionary()     # machine -> [allocation ordinal, {ordinal: tensor}]


def start_program() -> None:
    """Called before each SPMD program: shared HBM tensors are matched by allocation order."""
    state = _programs.setdefault(_current(), [0, {}])
    state[0] = 0


def _shared_hbm(shape, dtype, buffer, name, api, loc) -> Tile:
    """shared_hbm / hbm tensors are one tensor for all programs of a grid (private_hbm is per program)."""
    if buffer is private_hbm:
        return _ops.alloc(_HBM, shape, dtype, api, name, loc)
    m = _current()
    state = _programs.setdefault(m, [0, {}])
    ordinal = state[0]
    state[0] += 1
    # Programs of a threaded LNC launch run on one machine each: they share the launch group's tensors.
    group = getattr(m, "lnc_group", None)
    tensors = group.shared.setdefault("beta1_shared_hbm", {}) if group is not None else state[1]
    with group.lock if group is not None else contextlib.nullcontext():
        t = tensors.get(ordinal)
        if t is None or tuple(t.shape) != tuple(shape) or t.dtype != _dt.canonical(dtype):
            t = _ops.alloc(_HBM, shape, dtype, api, name, loc)
            tensors[ordinal] = t
    return t


def _storage_tile(t: Tile) -> Tile:
    """The partition-first view of a (block) tensor's whole storage."""
    return Tile(t.storage, t.storage.array, t.dtype, t.name)


def _fill(t: Tile, value, api: str) -> Tile:
    if t.buffer == _HBM:
        t.write(np.full(t.shape, value, dtype=np.float32))     # a host-initialised constant
    else:
        _ops.issue(_I.Memset(api=api, loc=_loc(), dst=_storage_tile(t), value=_ops.scalar(value)))
    return t


def ndarray(shape, dtype, buffer=None, name: str = "", **_) -> Tile:
    return _create(shape, dtype, buffer, name, "nl.ndarray")


def empty_like(a, dtype=None, buffer=None, name: str = "", **_) -> Tile:
    return ndarray(a.shape, dtype or a.dtype, buffer if buffer is not None else _buf_of(a), name)


def _buf_of(a):
    return {_HBM: hbm, _PSUM: psum}.get(getattr(a, "buffer", _SBUF), sbuf)


def zeros(shape, dtype, buffer=None, name: str = "", **_) -> Tile:
    return _fill(_create(shape, dtype, buffer, name, "nl.zeros"), 0, "nl.zeros")


def ones(shape, dtype, buffer=None, name: str = "", **_) -> Tile:
    return _fill(_create(shape, dtype, buffer, name, "nl.ones"), 1, "nl.ones")


def full(shape, fill_value, dtype, buffer=None, name: str = "", **_) -> Tile:
    return _fill(_create(shape, dtype, buffer, name, "nl.full"), fill_value, "nl.full")


def zeros_like(a, dtype=None, buffer=None, name: str = "", **_) -> Tile:
    return zeros(a.shape, dtype or a.dtype, buffer if buffer is not None else _buf_of(a), name)


def ones_like(a, dtype=None, buffer=None, name: str = "", **_) -> Tile:
    return ones(a.shape, dtype or a.dtype, buffer if buffer is not None else _buf_of(a), name)


def full_like(a, fill_value, dtype=None, buffer=None, name: str = "", **_) -> Tile:
    return full(a.shape, fill_value, dtype or a.dtype, buffer if buffer is not None else _buf_of(a), name)


def rand(shape, dtype=float32, **_) -> Tile:
    """Uniform [0, 1) values from the engine random number generator (isa Rand)."""
    loc = _loc()
    t = _create(shape, dtype, None, "", "nl.rand")
    cls = _ops.isa_class("Rand", "nl.rand")
    dst = _storage_tile(t)
    if _current().chip.nc_version >= 4:
        _ops.issue(cls(api="nl.rand", loc=loc, dst=dst, mode="uniform"))
        return t
    # v2/v3: 32 random bits per element, scaled into [0, 1) on the Vector Engine
    bits = _ops.alloc(_SBUF, dst.shape, uint32, "nl.rand", loc=loc)
    _ops.issue(cls(api="nl.rand", loc=loc, dst=bits, mode="bits"))
    _ops.issue(_I.TensorScalar(api="nl.rand", loc=loc, dst=dst, data=bits, op0="multiply", operand0=2.0 ** -32,
                               op1="minimum", operand1=float(np.nextafter(np.float32(1), np.float32(0)))))
    return t


def random_seed(seed, mask=None, **_):
    """Seed the Vector Engine random number generator (isa SetRngSeed) with a 32-bit scalar or [1, 1] tile."""
    loc = _loc()
    if mask is not None:
        raise NotImplementedError(f"nl.random_seed(mask=...) is not modelled by trnlab. At {loc}")
    _flush()
    cls = _ops.isa_class("SetRngSeed", "nl.random_seed")
    if _ops.is_tile(seed):
        src = _ops.real_tile(seed, "random_seed", loc)
    else:
        src = _ops.alloc(_SBUF, (1, 1), int32, "nl.random_seed", loc=loc)
        _ops.issue(_I.Memset(api="nl.random_seed", loc=loc, dst=src, value=int(seed)))
    _ops.issue(cls(api="nl.random_seed", loc=loc, src_seeds=src))


def shared_constant(constant, dtype=None, **_) -> Tile:
    """A constant tensor in HBM (host data placed before the kernel runs)."""
    arr = np.asarray(constant)
    dtype = _dt.canonical(dtype if dtype is not None else arr.dtype)
    t = _ops.alloc(_HBM, arr.shape, dtype, "nl.shared_constant")
    t.write(arr)
    return t


def shared_identity_matrix(n, dtype=uint8, **_) -> Tile:
    return shared_constant(np.eye(int(n)), dtype)


def static_cast(array, dtype):
    """Host-side cast of a numpy array to an NKI dtype (bf16/fp8 via ml_dtypes, with rounding)."""
    return _dt.cast(np.asarray(array, dtype=np.float32) if np.asarray(array).dtype.kind == "f"
                    else np.asarray(array), _dt.canonical(dtype))


# --- data movement --------------------------------------------------------------------------------
def _expect_hbm(x, name: str, api: str, loc: str):
    buf = x.tensor.buffer if isinstance(x, (_Access, _IndirectAccess)) else getattr(x, "buffer", None)
    if buf != _HBM:
        raise _BufferKindError(f"Expected operand '{name}' of '{api}' to be in address space 'hbm', but got a tile "
                               f"in '{buf}' instead. At {loc}")


def _as_2d(x):
    """An HBM view of rank < 2 (e.g. A[0:128, j]) moves as a [n, 1] tile: on-chip tiles keep a free dim."""
    if isinstance(x, (_Access, _IndirectAccess)) or len(x.shape) >= 2:
        return x
    return x.reshape(tuple(x.shape) + (1,) * (2 - len(x.shape)))


def _indirect_cut(mask, shape: tuple, api: str, loc: str):
    """(rows, free box) that a mask keeps of a gather/scatter, None when it keeps nothing. A gather moves
    whole index rows, so the mask must be a range of rows times a box of the free dims."""
    if mask is None:
        return slice(None), tuple(slice(None) for _ in shape[1:])
    region = _Region.of(mask, shape, loc)
    if region.empty:
        return None
    full = np.broadcast_to(mask.values if hasattr(mask, "values") else np.asarray(mask, dtype=bool), shape)
    hit = np.flatnonzero(full.reshape(shape[0], -1).any(axis=1))
    rows = slice(int(hit[0]), int(hit[-1]) + 1)
    free = tuple(region.box[1:])
    if not full[(rows,) + free].all():
        raise NotImplementedError(f"{api}: an indirect (index-tile) access takes only a mask that keeps a "
                                  f"range of rows times a box of the free dims. At {loc}")
    return rows, free


def load(src, mask=None, dtype=None, **_):
    """HBM -> new SBUF tile (DMA). An index tile in the partition position gathers rows."""
    loc = _loc()
    _flush()
    _expect_hbm(src, "src", "load", loc)
    dtype = _dt.canonical(dtype or src.dtype)
    src = _as_2d(src)
    shape = tuple(src.shape)
    _ops.check_partitions(shape, "load", loc)

    def emit(dst, _acc):
        if isinstance(src, _IndirectAccess):
            cut = _indirect_cut(mask, shape, "nl.load", loc)
            if cut is None:
                return
            rows, free = cut
            _ops.issue(_I.DmaGather(api="nl.load", loc=loc, dst=dst._view(dst.array[(rows,) + free]),
                                    src=src.table._view(src.table.array[(slice(None),) + free]),
                                    index=src.index_tile._view(src.index_tile.array[rows])))
            return
        region = _Region.of(mask, shape, loc)
        if region is not None and region.empty:
            return
        s = _cut(src, region, shape)
        d = _cut(dst, region, shape)
        _ops.issue(_I.DmaCopy(api="nl.load", loc=loc, dst=d, src=_ops._expand(s, d.shape) if s.size != d.size else s,
                              mask=region.residual if region is not None else None))
    return _ops.new_result(shape, dtype, _SBUF, emit, "nl.load", targets=(_SBUF,))


def store(dst, value, mask=None, **_) -> None:
    """SBUF tile -> HBM (DMA); PSUM values are first copied to SBUF; an index tile scatters rows."""
    loc = _loc()
    _flush()
    _expect_hbm(dst, "dst", "store", loc)
    if isinstance(dst, _IndirectAccess):
        v = _ops.to_sbuf(_ops.real_tile(value, "store", loc), "nl.store", loc)
        cut = _indirect_cut(mask, tuple(dst.shape), "nl.store", loc)
        if cut is None:
            return
        rows, free = cut
        if v.shape != tuple(dst.shape) and (mask is not None):
            raise _ShapeError(f"nl.store: masked scatter needs a value of shape {list(dst.shape)}, got "
                              f"{list(v.shape)}. At {loc}")
        if mask is not None:
            v = v._view(v.array[(rows,) + free])
        _ops.issue(_I.DmaGather(api="nl.store", loc=loc, dst=dst.table._view(dst.table.array[(slice(None),) + free]),
                                src=v, index=dst.index_tile._view(dst.index_tile.array[rows]), scatter=True))
        return
    dst = _as_2d(dst)
    if not _ops.is_tile(value):
        value = full(tuple(dst.shape), value, dst.dtype)
    v = _ops.real_tile(value, "store", loc)
    shape = tuple(dst.shape)
    region = _Region.of(mask, shape, loc)
    if region is not None and region.empty:
        return
    d = _cut(dst, region, shape)
    v = _ops.to_sbuf(_cut(v, region, shape) if v.shape == shape else v, "nl.store", loc)
    if v.size != d.size:
        v = _ops._expand(v, d.shape)
    _ops.issue(_I.DmaCopy(api="nl.store", loc=loc, dst=d, src=v, mask=region.residual if region is not None else None))


def load_transpose2d(src, mask=None, dtype=None, **_):
    """HBM [F, P] -> SBUF tile [P, F] (DMA transpose)."""
    loc = _loc()
    _flush()
    _expect_hbm(src, "src", "load_transpose2d", loc)
    if len(src.shape) != 2:
        raise _ShapeError(f"load_transpose2d: src must be 2-D, got {list(src.shape)}. At {loc}")
    shape = (src.shape[1], src.shape[0])
    _ops.check_partitions(shape, "load_transpose2d", loc)
    dtype = _dt.canonical(dtype or src.dtype)

    def emit(dst, _acc):
        region = _Region.of(mask, shape, loc)
        if region is not None and region.empty:
            return
        s = _ops.tile_of(src) if region is None else src
        if region is not None:
            box = region.box
            s = _cut(src, _Region((box[1], box[0]), None, False), tuple(src.shape))
        d = _cut(dst, region, shape)
        if _dt.itemsize(s.dtype) in (2, 4) and (region is None or region.residual is None):
            # the DMA engines transpose (trn2 DMA transpose: 2- and 4-byte dtypes); a dtype change is a
            # copy after it, not an element-by-element strided load (one descriptor per element). The
            # staging tile is an allocation site of its own: at the result's site it would count as the
            # result's next instance (core.memory: stack allocation and reclaim free the previous one)
            t = d if d.dtype == s.dtype else _ops.alloc(_SBUF, tuple(d.shape), s.dtype, "nl.load_transpose2d",
                                                          loc=f"{loc} (load_transpose2d staging)")
            _ops.issue(_I.DmaTranspose(api="nl.load_transpose2d", loc=loc, dst=t, src=s, axes=(1, 0)))
            if t is not d:
                _ops.issue(_I.TensorCopy(api="nl.load_transpose2d", loc=loc, dst=d, src=t))
        else:
            _ops.issue(_I.DmaCopy(api="nl.load_transpose2d", loc=loc, dst=d, src=s.permute(1, 0),
                                  mask=region.residual if region is not None else None))
    return _ops.new_result(shape, dtype, _SBUF, emit, "nl.load_transpose2d", targets=(_SBUF,))


def copy(src, mask=None, dtype=None, **_):
    loc = _loc()
    _flush()
    x = src if isinstance(src, _Access) else _ops.tile_of(src)
    shape = tuple(x.shape)
    dtype = _dt.canonical(dtype or x.dtype)

    def emit(dst, _acc):
        _ops.copy_into(dst, x, loc, "nl.copy", mask=mask)
    return _ops.new_result(shape, dtype, _SBUF, emit, "nl.copy")


def broadcast_to(src, shape, **_):
    loc = _loc()
    _flush()
    x = _ops.real_tile(src, "broadcast_to", loc)
    shape = tuple(int(s) for s in shape)

    def emit(dst, _acc):
        _ops.copy_into(dst, x, loc, "nl.broadcast_to")
    return _ops.new_result(shape, x.dtype, _SBUF, emit, "nl.broadcast_to")


def expand_dims(data, axis):
    t = _ops.tile_of(data)
    return t._view(np.expand_dims(t.array, axis))


# --- element-wise math ------------------------------------------------------------------------------
def _unary_activation(func: str):
    def fn(x, dtype=None, mask=None, **_):
        loc = _loc()
        _flush()
        t = _ops.real_tile(x, func, loc)
        api = f"nl.{func}"

        def emit(dst, _acc):
            _ops.activation_into(dst, func, t, loc, api, mask=mask)
        return _ops.new_result(t.shape, _ops.out_dtype(dtype, t), _SBUF, emit, api)
    fn.__name__ = fn.__qualname__ = func
    fn.__doc__ = f"nl.{func}(x, dtype=None, mask=None): element-wise {func} on the Scalar Engine (activation)."
    return fn


def _unary_alu(name: str, op: str, operand):
    def fn(x, dtype=None, mask=None, **_):
        loc = _loc()
        _flush()
        t = _ops.real_tile(x, name, loc)

        def emit(dst, _acc):
            _ops.binary_into(dst, t, operand, op, loc, api=f"nl.{name}", mask=mask)
        return _ops.new_result(t.shape, _ops.out_dtype(dtype, t), _SBUF, emit, f"nl.{name}")
    fn.__name__ = fn.__qualname__ = name
    return fn


_ACTIVATIONS = ("exp", "log", "sin", "cos", "tanh", "arctan", "sqrt", "rsqrt", "sigmoid", "relu", "gelu", "gelu_dx",
                "gelu_apprx_tanh", "gelu_apprx_sigmoid", "silu", "silu_dx", "erf", "erf_dx", "softplus", "mish",
                "square", "sign", "abs", "negative", "floor", "ceil", "trunc", "softsign", "erf_inv")
for _f in _ACTIVATIONS:
    globals()[_f] = _unary_activation(_f)

logical_not = _unary_alu("logical_not", "equal", 0)
invert = _unary_alu("invert", "bitwise_xor", -1)
bitwise_not = invert


def tan(x, dtype=None, mask=None, **_):
    return divide(sin(x, mask=mask), cos(x, mask=mask), dtype=dtype, mask=mask)  # noqa: F821 (made in the loop above)


def reciprocal(x, dtype=None, mask=None, **_):
    """1 / x on the Vector Engine (isa Reciprocal)."""
    loc = _loc()
    _flush()
    t = _ops.real_tile(x, "reciprocal", loc)

    def emit(dst, _acc):
        region = _Region.of(mask, tuple(t.shape), loc)
        if region is not None and region.empty:
            return
        _ops.issue(_I.Reciprocal(api="nl.reciprocal", loc=loc, dst=_cut(dst, region, t.shape),
                                 data=_cut(t, region, t.shape), mask=region.residual if region else None))
    return _ops.new_result(t.shape, _ops.out_dtype(dtype, t), _SBUF, emit, "nl.reciprocal")


def _binary(name: str, op: str | None = None):
    op = op or name

    def fn(x, y, dtype=None, mask=None, **_):
        loc = _loc()
        _flush()
        a = _ops.real_tile(x, name, loc) if _ops.is_tile(x) else x
        b = _ops.real_tile(y, name, loc) if _ops.is_tile(y) else y
        if not _ops.is_tile(a) and not _ops.is_tile(b):
            raise _NkiValidationError(f"nl.{name}: at least one operand must be a tile. At {loc}")
        shape = _ops.bshape(a, b)

        def emit(dst, _acc):
            _ops.binary_into(dst, a, b, op, loc, api=f"nl.{name}", mask=mask)
        return _ops.new_result(shape, _ops.out_dtype(dtype, a, b), _SBUF, emit, f"nl.{name}")
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"nl.{name}(x, y, dtype=None, mask=None): element-wise {op} (Vector Engine)."
    return fn


add = _binary("add")
subtract = _binary("subtract")
multiply = _binary("multiply")
divide = _binary("divide")
power = _binary("power")
maximum = _binary("maximum")
minimum = _binary("minimum")
fmod = _binary("fmod")
mod = _binary("mod")
equal = _binary("equal")
not_equal = _binary("not_equal")
greater = _binary("greater")
greater_equal = _binary("greater_equal")
less = _binary("less")
less_equal = _binary("less_equal")
logical_and = _binary("logical_and")
logical_or = _binary("logical_or")
logical_xor = _binary("logical_xor")
bitwise_and = _binary("bitwise_and")
bitwise_or = _binary("bitwise_or")
bitwise_xor = _binary("bitwise_xor")
left_shift = _binary("left_shift")
right_shift = _binary("right_shift")


def where(condition, x, y, dtype=None, mask=None, **_):
    """x where condition else y: copy y, convert the condition to uint8, predicated copy of x."""
    loc = _loc()
    _flush()
    cond = _ops.real_tile(condition, "where", loc)
    a = _ops.real_tile(x, "where", loc) if _ops.is_tile(x) else x
    b = _ops.real_tile(y, "where", loc) if _ops.is_tile(y) else y
    shape = _ops.bshape(cond, a, b)
    out_dt = _ops.out_dtype(dtype, a, b)
    cls = _ops.isa_class("TensorCopyPredicated", "nl.where")

    def emit(dst, _acc):
        if mask is not None:
            raise NotImplementedError(f"nl.where(mask=...) is not modelled. At {loc}")
        if _ops.is_tile(b):
            _ops.copy_into(dst, b, loc, "nl.where")
        else:
            _ops.issue(_I.Memset(api="nl.where", loc=loc, dst=dst, value=_ops.scalar(b)))
        pred = _ops.alloc(_SBUF, shape, uint8, "nl.where", loc=loc)
        _ops.copy_into(pred, cond, loc, "nl.where")
        src = a
        if _ops.is_tile(a) and (a.dtype != dst.dtype or tuple(a.shape) != tuple(dst.shape)):
            src = _ops.alloc(_SBUF, dst.shape, dst.dtype, "nl.where", loc=loc)
            _ops.copy_into(src, a, loc, "nl.where")
        _ops.issue(cls(api="nl.where", loc=loc, dst=dst, src=src if _ops.is_tile(src) else _ops.scalar(src),
                       predicate=pred))
    return _ops.new_result(shape, out_dt, _SBUF, emit, "nl.where")


# --- reductions -------------------------------------------------------------------------------------
def _axes(axis, ndim: int, loc: str) -> tuple:
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(int(a) % ndim for a in axes)
    if 0 in axes:
        raise _ShapeError(f"reductions run along free dims only; axis 0 (partition) is not allowed "
                          f"(use nisa.tensor_partition_reduce or a matmul). At {loc}")
    return axes


def _reduced_shape(shape, axes, keepdims) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    out = tuple(s for i, s in enumerate(shape) if i not in axes)
    return out if len(out) >= 2 else out + (1,) * (2 - len(out))


def _reduced_last(t, axes: tuple):
    """(view, axes) with the reduced free axes moved last: the engine reduces the innermost dims of its
    access pattern, and reordering a strided view is free (nl.sum(x, axis=[2, 4]) is legal NKI)."""
    last = tuple(range(t.ndim - len(axes), t.ndim))
    if tuple(sorted(axes)) == last:
        return t, axes
    kept = [d for d in range(t.ndim) if d not in axes]
    return t.permute(tuple(kept) + tuple(sorted(axes))), last


_REDUCE_IDENTITY = {"add": 0.0, "maximum": -np.inf, "minimum": np.inf, "multiply": 1.0, "logical_and": 1.0,
                    "logical_or": 0.0}


def _masked_reduce_input(t, mask, op: str, axes: tuple, dst, name: str, loc: str):
    """(data, dst write mask) for a reduction whose mask= is not a rectangle: the elements the mask drops
    take no part (they are replaced by the reducer's identity), and dst elements whose whole window is
    masked out are not written. The masked-out indices may lie out of bounds (max-pool padding)."""
    if op not in _REDUCE_IDENTITY or name == "mean":
        raise NotImplementedError(f"nl.{name} with a non-rectangular mask is not modelled. At {loc}")
    full = np.broadcast_to(mask.values if isinstance(mask, Predicate) else np.asarray(mask, dtype=bool),
                           tuple(t.shape))
    data = _ops.masked_gather(t, full, _REDUCE_IDENTITY[op], f"nl.{name}", loc)
    write = full.any(axis=axes).reshape(dst.shape)
    return data, None if write.all() else np.ascontiguousarray(write)


def _reduction(name: str, op: str):
    def fn(x, axis, dtype=None, mask=None, keepdims=False, **_):
        loc = _loc()
        _flush()
        # a masked access may index out of bounds where the mask is False: keep it unresolved
        t = x if isinstance(x, _Access) and mask is not None else _ops.real_tile(x, name, loc)
        axes = _axes(axis, len(t.shape), loc)
        shape = _reduced_shape(t.shape, axes, keepdims)
        count = int(np.prod([t.shape[a] for a in axes]))

        def emit(dst, _acc):
            data, write = t, None
            if mask is not None:
                region = _Region.of(mask, tuple(t.shape), loc)
                if region.empty:
                    return
                if region.residual is None:
                    data = _cut(t, region, tuple(t.shape))
                    dst = dst._view(dst.array[region.box[0]])
                else:
                    data, write = _masked_reduce_input(t, mask, op, axes, dst, name, loc)
            data, red_axes = _reduced_last(data, axes)
            _ops.issue(_I.TensorReduce(api=f"nl.{name}", loc=loc, dst=dst, data=data, op=op, axes=red_axes,
                                       mask=write))
            if name == "mean":
                _ops.issue(_I.TensorScalar(api="nl.mean", loc=loc, dst=dst, data=dst, op0="multiply",
                                           operand0=1.0 / count))
        return _ops.new_result(shape, _ops.out_dtype(dtype, t), _SBUF, emit, f"nl.{name}")
    fn.__name__ = fn.__qualname__ = name
    return fn


sum = _reduction("sum", "add")              # noqa: A001
max = _reduction("max", "maximum")          # noqa: A001
min = _reduction("min", "minimum")          # noqa: A001
prod = _reduction("prod", "multiply")
mean = _reduction("mean", "add")
all = _reduction("all", "logical_and")      # noqa: A001
any = _reduction("any", "logical_or")       # noqa: A001


def all_reduce(x, op, program_axes, dtype=None, mask=None, parallel_reduce=True, asynchronous=False, **_):
    raise NotImplementedError(f"nl.all_reduce (a reduction across SPMD programs) is not modelled: trnlab runs "
                              f"the programs of a grid one after another. At {_loc()}")


def atomic_rmw(dst, value, op, mask=None, **_):
    raise NotImplementedError(f"nl.atomic_rmw (DMA read-modify-write) is not modelled by trnlab. At {_loc()}")


def dropout(x, rate, dtype=None, mask=None, **_):
    loc = _loc()
    _flush()
    t = _ops.real_tile(x, "dropout", loc)
    cls = _ops.isa_class("Dropout", "nl.dropout")

    def emit(dst, _acc):
        _ops.issue(cls(api="nl.dropout", loc=loc, dst=dst, data=t, prob=rate))
    return _ops.new_result(t.shape, _ops.out_dtype(dtype, t), _SBUF, emit, "nl.dropout")


def loop_reduce(x, op, loop_indices, dtype=None, mask=None, **_):
    """acc = op(acc, x) where acc is the assignment target: a variable (`b = nl.loop_reduce(a, ...)`) or a
    subscripted tile (`acc[i] = nl.loop_reduce(a, ...)`, reduced in place when the assignment runs)."""
    loc = _loc()
    _flush()
    t = _ops.real_tile(x, "loop_reduce", loc)
    acc = _assignment_target(sys._getframe(1))
    opname = _op(op)
    if isinstance(acc, _Pending):
        acc = acc.materialize()
    if isinstance(acc, Tile) and tuple(acc.shape) == tuple(t.shape):
        _ops.binary_into(acc, acc, t, opname, loc, api="nl.loop_reduce", mask=mask)
        return acc

    def emit(dst, into_target):
        if into_target:
            _ops.binary_into(dst, dst, t, opname, loc, api="nl.loop_reduce", mask=mask)
        else:                                  # no target to reduce into: the value itself
            _ops.copy_into(dst, t, loc, "nl.loop_reduce", mask=mask)
    return _ops.new_result(t.shape, _ops.out_dtype(dtype, t), _SBUF, emit, "nl.loop_reduce", reduces=True)


def _assignment_target(frame):
    """The current value of `name` for a call written `name = nl.loop_reduce(...)`."""
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
    m = re.match(r"\s*([A-Za-z_]\w*)\s*=(?!=)", line)
    return frame.f_locals.get(m.group(1)) if m else None


# --- tensor engine ----------------------------------------------------------------------------------
def transpose(x, dtype=None, mask=None, **_):
    """[P, F] -> [F, P] on the Tensor Engine (SBUF -> PSUM); PSUM inputs go through SBUF first."""
    loc = _loc()
    _flush()
    t = _ops.real_tile(x, "transpose", loc)
    if t.ndim != 2:
        raise _ShapeError(f"transpose: input tile `{t.name}` {list(t.shape)} exceed max supported number of "
                          f"dimensions of 2. At {loc}")
    src = _ops.to_sbuf(t, "nl.transpose", loc)
    shape = (t.shape[1], t.shape[0])

    def emit(dst, _acc):
        if mask is not None:
            raise NotImplementedError(f"nl.transpose(mask=...) is not modelled. At {loc}")
        _ops.issue(_I.Transpose(api="nl.transpose", loc=loc, dst=dst, src=src))
    return _ops.new_result(shape, _dt.canonical(dtype or t.dtype), _PSUM, emit, "nl.transpose", targets=(_PSUM,))


def matmul(x, y, transpose_x=False, mask=None, **_):
    """x @ y into PSUM (fp32). Without transpose_x, x [M, K] is transposed on the Tensor Engine first."""
    loc = _loc()
    _flush()
    a = _ops.real_tile(x, "matmul", loc)
    b = _ops.to_sbuf(_ops.real_tile(y, "matmul", loc), "nl.matmul", loc)
    if not transpose_x:
        xt = _ops.alloc(_PSUM, (a.shape[1], a.shape[0]), a.dtype, "nl.matmul", loc=loc)
        _ops.issue(_I.Transpose(api="nl.matmul", loc=loc, dst=xt, src=_ops.to_sbuf(a, "nl.matmul", loc)))
        a = xt
    a = _ops.to_sbuf(a, "nl.matmul", loc)
    return matmul_result(a, b, loc, "nl.matmul", mask)


def matmul_result(stationary, moving, loc, api, mask, **mm_kw):
    shape = (stationary.free_size, moving.free_size)
    out_dt = stationary.dtype if mm_kw.get("is_transpose") else float32

    def emit(dst, accumulate):
        s, mv, d = stationary, moving, dst
        if mask is not None:
            region = _Region.of(mask, shape, loc)
            if region.empty:
                return
            if region.residual is not None:
                raise NotImplementedError(f"{api}: a non-rectangular mask on a matmul. At {loc}")
            s = s._view(s.array[:, region.box[0]])
            mv = mv._view(mv.array[:, region.box[1]])
            d = _cut(dst, region, shape)
        acc = False
        if accumulate:
            acc = True if d.is_initialized() else None
        _ops.issue(_I.MatMul(api=api, loc=loc, dst=d, stationary=s, moving=mv, accumulate=acc, **mm_kw))
    return _ops.new_result(shape, out_dt, _PSUM, emit, api, targets=(_PSUM,), accumulates=True)


# --- composite ops ----------------------------------------------------------------------------------
def softmax(x, axis, dtype=None, compute_dtype=None, mask=None, **_):
    """exp(x - max) / sum along the free axis: reduce-max, exp with add-reduce, reciprocal, scale."""
    loc = _loc()
    _flush()
    t = _ops.real_tile(x, "softmax", loc)
    _axes(axis, t.ndim, loc)
    if mask is not None:
        raise NotImplementedError(f"nl.softmax(mask=...) is not modelled. At {loc}")
    api = "nl.softmax"

    def emit(dst, _acc):
        p = t.shape[0]
        axes = tuple(range(1, t.ndim))
        neg_max = _ops.alloc(_SBUF, (p, 1), float32, api, loc=loc)
        _ops.issue(_I.TensorReduce(api=api, loc=loc, dst=neg_max, data=t, op="maximum", axes=axes, negate=True))
        e = _ops.alloc(_SBUF, t.shape, float32, api, loc=loc)
        total = _ops.alloc(_SBUF, (p, 1), float32, api, loc=loc)
        _ops.issue(_I.Activation(api=api, loc=loc, dst=e, func="exp", data=t, bias=neg_max, reduce_op="add",
                                 reduce_res=total, reduce_cmd="reset_reduce"))
        inv = _ops.alloc(_SBUF, (p, 1), float32, api, loc=loc)
        _ops.issue(_I.Reciprocal(api=api, loc=loc, dst=inv, data=total))
        _ops.issue(_I.TensorScalar(api=api, loc=loc, dst=dst, data=e, op0="multiply", operand0=inv))
    return _ops.new_result(t.shape, _ops.out_dtype(dtype, t), _SBUF, emit, api)


def rms_norm(x, w, axis, n, epsilon=1e-6, dtype=None, compute_dtype=None, mask=None, **_):
    """x * rsqrt(sum(x^2)/n + eps) * w along the free axis."""
    loc = _loc()
    _flush()
    t = _ops.real_tile(x, "rms_norm", loc)
    wt = _ops.real_tile(w, "rms_norm", loc)
    _axes(axis, t.ndim, loc)
    api = "nl.rms_norm"
    if mask is not None:
        raise NotImplementedError(f"nl.rms_norm(mask=...) is not modelled. At {loc}")

    def emit(dst, _acc):
        p = t.shape[0]
        ss = _ops.alloc(_SBUF, (p, 1), float32, api, loc=loc)
        _ops.issue(_I.Activation(api=api, loc=loc, dst=None, func="square", data=t, reduce_op="add",
                                 reduce_res=ss, reduce_cmd="reset_reduce"))
        _ops.issue(_I.TensorScalar(api=api, loc=loc, dst=ss, data=ss, op0="multiply", operand0=1.0 / float(n),
                                   op1="add", operand1=float(epsilon)))
        rstd = _ops.alloc(_SBUF, (p, 1), float32, api, loc=loc)
        _ops.issue(_I.Activation(api=api, loc=loc, dst=rstd, func="rsqrt", data=ss))
        wb = _ops.partition_broadcast(wt, p, api, loc) if wt.shape[0] == 1 and p > 1 else wt
        _ops.issue(_I.ScalarTensorTensor(api=api, loc=loc, dst=dst, data=t, op0="multiply", operand0=rstd,
                                         op1="multiply", operand1=_ops._expand(wb, t.shape)))
    return _ops.new_result(t.shape, _ops.out_dtype(dtype, t), _SBUF, emit, api)


# --- debugging ----------------------------------------------------------------------------------------
def device_print(prefix, x, mask=None, **_):
    """Print a tile's values (simulation only; numerics must be on)."""
    _flush()
    m = _current()
    t = _ops.tile_of(x) if _ops.is_tile(x) else x
    if isinstance(t, _Tensor):
        if not m.numerics:
            text = f"{prefix} <{t.describe()}: values not computed (numerics off)>"
        else:
            text = f"{prefix} {np.array2string(_dt.to_fp32(t.numpy()), threshold=64)}"
    else:
        text = f"{prefix} {t}"
    m.printed.append(text)
    print(text)
