"""nl.* convenience tile functions of the current front end (NKI 0.3+): nl.add(x, y), nl.exp(x),
nl.sum(x, axis), nl.softmax(x), nl.matmul(x, y), ...

Each allocates its result as a new on-chip tile and issues ISA instructions; nothing is computed here.
Intermediates of multi-instruction functions (mean, softmax, rms_norm) are fp32 tiles.
"""
from __future__ import annotations

import itertools

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.machine import current
from trnlab.core.srcloc import user_location
from trnlab.core.tensor import HBM, PSUM, SBUF, Tensor
from trnlab.errors import BufferKindError, DtypeError, NkiValidationError, ShapeError
from trnlab.isa import instructions as I
from trnlab.isa.base import Engine
from trnlab.isa.random import Dropout, Rand as RandBits, SetRngSeed
from trnlab.isa.vector import TensorCopyPredicated

_ids = itertools.count(1)
F32 = dt.float32


# --- plumbing ------------------------------------------------------------------------------------------
def new_tile(shape, dtype, api: str, kind: str = SBUF) -> Tensor:
    """A fresh uninitialised on-chip tile for the result of an nl.* function."""
    short = api.split(".")[-1]
    return current().new_onchip(kind, tuple(int(s) for s in shape), dt.canonical(dtype),
                                f"{short}_{next(_ids)}", api=api, loc=user_location())


def issue(cls, api: str, **fields) -> None:
    current().issue(cls(api=api, loc=user_location(), **fields))


def on_chip(x, name: str, api: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ShapeError(f"{api}: '{name}' must be a tile, got {type(x).__name__} {x!r}. At {user_location()}")
    if not x.on_chip:
        raise BufferKindError(f"Expected operand '{name}' of '{api.split('.')[-1]}' to be in address space "
                              f"'psum|sbuf', but got a tile in '{x.buffer}' instead ({x.describe()}). "
                              f"At {user_location()}")
    return x


_RANK = {"float32": 9, "tfloat32": 8, "float16": 7, "bfloat16": 7, "float8_e4m3": 5, "float8_e4m3fn": 5,
         "float8_e5m2": 5, "int32": 4, "uint32": 4, "int16": 3, "uint16": 3, "int8": 2, "uint8": 2, "bool": 1}


def promote(a, b):
    """NKI type promotion: the higher-precision input dtype (bf16 with fp16 -> fp32)."""
    a, b = dt.canonical(a), dt.canonical(b)
    if a == b:
        return a
    ra, rb = _RANK.get(dt.name_of(a), 0), _RANK.get(dt.name_of(b), 0)
    if ra == rb:
        return F32 if dt.is_float(a) else (a if dt.itemsize(a) >= dt.itemsize(b) else b)
    return a if ra > rb else b


def broadcast_view(x: Tensor, shape: tuple, api: str) -> Tensor:
    if tuple(x.shape) == tuple(shape):
        return x
    if x.ndim != len(shape):
        raise ShapeError(f"{api}: cannot broadcast {x.describe()} to {list(shape)}: on-chip operands keep "
                         f"the partition dim first, so ranks must match. At {user_location()}")
    return x.broadcast_to(shape)


def result_shape(api: str, *tiles: Tensor) -> tuple:
    try:
        return tuple(np.broadcast_shapes(*(t.shape for t in tiles)))
    except ValueError:
        raise ShapeError(f"{api}: shapes {[list(t.shape) for t in tiles]} are not broadcastable. "
                         f"At {user_location()}") from None


def _is_column(t: Tensor, shape: tuple) -> bool:
    """A [P, 1] per-partition operand the ISA broadcasts along the free dims (tensor_scalar)."""
    return t.shape[0] == shape[0] and t.free_size == 1 and t.ndim == len(shape)


def _vector_engine(op: str, *tiles: Tensor) -> Engine:
    """power runs on GpSimd; all-integer arithmetic too (exact int32 math); GpSimd cannot reach PSUM."""
    if any(t.buffer == PSUM for t in tiles):
        return Engine.VECTOR
    if op in ("power", "pow"):
        return Engine.GPSIMD
    if all(dt.is_int(t.dtype) for t in tiles) and op in ("add", "subtract", "multiply", "maximum", "minimum"):
        return Engine.GPSIMD
    return Engine.VECTOR


# --- elementwise ---------------------------------------------------------------------------------------
def binary(op: str, x, y, dtype=None, api: str = "") -> Tensor:
    api = api or f"nl.{op}"
    xt, yt = isinstance(x, Tensor), isinstance(y, Tensor)
    if not (xt or yt):
        raise NkiValidationError(f"{api}: at least one of x, y must be a tile, got {x!r} and {y!r}. "
                                 f"At {user_location()}")
    if xt and yt:
        on_chip(x, "x", api), on_chip(y, "y", api)
        shape = result_shape(api, x, y)
        out = new_tile(shape, dtype if dtype is not None else promote(x.dtype, y.dtype), api)
        if tuple(x.shape) == shape and tuple(y.shape) != shape and _is_column(y, shape):
            issue(I.TensorScalar, api, dst=out, data=x, op0=op, operand0=y)
        elif tuple(y.shape) == shape and tuple(x.shape) != shape and _is_column(x, shape):
            issue(I.TensorScalar, api, dst=out, data=y, op0=op, operand0=x, reverse0=True)
        else:
            a, b = broadcast_view(x, shape, api), broadcast_view(y, shape, api)
            issue(I.TensorTensor, api, dst=out, data1=a, data2=b, op=op, engine=_vector_engine(op, a, b))
        return out
    tile, scalar = (x, y) if xt else (y, x)
    on_chip(tile, "x" if xt else "y", api)
    out = new_tile(tile.shape, dtype if dtype is not None else tile.dtype, api)
    issue(I.TensorScalar, api, dst=out, data=tile, op0=op, operand0=_scalar(scalar, api), reverse0=not xt)
    return out


def _scalar(v, api):
    if isinstance(v, (bool, int, np.integer)):
        return int(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ShapeError(f"{api}: operand {v!r} is neither a tile nor a scalar. At {user_location()}") from None


def activation(func: str, x, dtype=None, api: str = "", bias=None, scale=1.0) -> Tensor:
    """func(x * scale + bias) on the Scalar engine."""
    api = api or f"nl.{func}"
    on_chip(x, "x", api)
    out = new_tile(x.shape, dtype if dtype is not None else x.dtype, api)
    issue(I.Activation, api, dst=out, func=func, data=x, bias=bias, scale=scale)
    return out


def negative(x, dtype=None):
    return _tensor_scalar("nl.negative", x, "multiply", -1.0, dtype)


def logical_not(x, dtype=None):
    return _tensor_scalar("nl.logical_not", x, "equal", 0, dtype)


def invert(x, dtype=None):
    """Bitwise NOT of an integer tile (AWS: integer input only, XOR with all-ones): one ALU instruction."""
    api = "nl.invert"
    on_chip(x, "x", api)
    if not dt.is_int(x.dtype):
        raise DtypeError(f"{api}: 'x' must be an integer tile (bitwise NOT acts on integer bits), got "
                         f"{dt.name_of(x.dtype)} ({x.describe()}). At {user_location()}")
    out = _tensor_scalar(api, x, "invert", 0, None)      # bitvec ops write integer tiles
    if dtype is None or dt.canonical(dtype) == out.dtype:
        return out
    return copy(out, dtype, api)


def reciprocal(x, dtype=None):
    api = "nl.reciprocal"
    on_chip(x, "x", api)
    out = new_tile(x.shape, dtype if dtype is not None else x.dtype, api)
    issue(I.Reciprocal, api, dst=out, data=x)
    return out


def tan(x, dtype=None):
    api = "nl.tan"
    s = activation("sin", x, F32, api)
    c = activation("cos", x, F32, api)
    return binary("divide", s, c, dtype if dtype is not None else x.dtype, api)


def _tensor_scalar(api, x, op, operand, dtype):
    on_chip(x, "x", api)
    out = new_tile(x.shape, dtype if dtype is not None else x.dtype, api)
    issue(I.TensorScalar, api, dst=out, data=x, op0=op, operand0=operand)
    return out


# --- reductions ---------------------------------------------------------------------------------------
def norm_axes(x: Tensor, axis, api: str) -> tuple:
    if axis is None:
        axis = tuple(range(1, x.ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(sorted(int(a) % x.ndim for a in axes))
    if 0 in axes:
        raise ShapeError(f"{api}: cannot reduce along the partition dimension (axis 0) of {x.describe()}; "
                         f"axes must be free dims. At {user_location()}")
    return axes


def reduced_shape(shape: tuple, axes: tuple, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if d in axes else s for d, s in enumerate(shape))
    out = tuple(s for d, s in enumerate(shape) if d not in axes)
    return out + (1,) * (2 - len(out)) if len(out) < 2 else out   # on-chip tiles stay >= 2-D


def reduce(op: str, x, axis, dtype=None, keepdims=False, api: str = "", negate=False) -> Tensor:
    api = api or f"nl.{op}"
    on_chip(x, "x", api)
    axes = norm_axes(x, axis, api)
    out = new_tile(reduced_shape(x.shape, axes, keepdims), dtype if dtype is not None else x.dtype, api)
    data, axes = reduced_last(x, axes)
    issue(I.TensorReduce, api, dst=out, data=data, op=op, axes=axes, negate=negate)
    return out


def reduced_last(x: Tensor, axes: tuple):
    """(view, axes) with the reduced free axes moved last: the engine reduces the innermost dims of its
    access pattern, and reordering a strided view is free (nl.sum(x, axis=[2, 4]) is legal NKI)."""
    last = tuple(range(x.ndim - len(axes), x.ndim))
    if tuple(sorted(axes)) == last:
        return x, axes
    kept = [d for d in range(x.ndim) if d not in axes]
    return Tensor.permute(x, tuple(kept) + tuple(sorted(axes))), last


def mean(x, axis, dtype=None, keepdims=False):
    api = "nl.mean"
    on_chip(x, "x", api)
    axes = norm_axes(x, axis, api)
    total = reduce("add", x, axes, F32, keepdims, api)
    n = int(np.prod([x.shape[a] for a in axes]))
    default = x.dtype if dt.is_float(x.dtype) else F32          # integer inputs average in fp32
    return _tensor_scalar(api, total, "multiply", 1.0 / n, dtype if dtype is not None else default)


# --- composite functions --------------------------------------------------------------------------------
def softmax(x, axis=-1, dtype=None):
    """exp(x - max) / sum(exp(x - max)) along the trailing free axes."""
    api = "nl.softmax"
    on_chip(x, "x", api)
    axes = norm_axes(x, axis, api)
    mx = reduce("maximum", x, axes, F32, True, api)
    e = activation("exp", binary("subtract", x, mx, F32, api), F32, api)
    r = reciprocal_of(reduce("add", e, axes, F32, True, api), api)
    return binary("multiply", e, r, dtype if dtype is not None else x.dtype, api)


def reciprocal_of(t: Tensor, api: str) -> Tensor:
    out = new_tile(t.shape, F32, api)
    issue(I.Reciprocal, api, dst=out, data=t)
    return out


def rms_norm(x, w, axis, n, epsilon=1e-6, dtype=None, compute_dtype=None):
    """x / sqrt(sum(x^2 along axis) / n + epsilon) * w."""
    api = "nl.rms_norm"
    on_chip(x, "x", api)
    axes = norm_axes(x, axis, api)
    ss = reduce("add", activation("square", x, F32, api), axes, F32, True, api)
    ms = new_tile(ss.shape, F32, api)
    issue(I.TensorScalar, api, dst=ms, data=ss, op0="multiply", operand0=1.0 / float(n), op1="add",
          operand1=float(epsilon))
    inv = activation("rsqrt", ms, F32, api)
    y = binary("multiply", x, inv, F32, api)
    out_dtype = dtype if dtype is not None else (compute_dtype if compute_dtype is not None else x.dtype)
    return binary("multiply", y, w, out_dtype, api) if w is not None else copy(y, out_dtype, api)


def where(condition, x, y, dtype=None):
    """x where condition != 0, else y (tiles or scalars)."""
    api = "nl.where"
    on_chip(condition, "condition", api)
    tiles = [t for t in (condition, x, y) if isinstance(t, Tensor)]
    shape = result_shape(api, *tiles)
    out_dtype = dtype if dtype is not None else next((t.dtype for t in (x, y) if isinstance(t, Tensor)), F32)
    out = new_tile(shape, out_dtype, api)
    if isinstance(y, Tensor):
        issue(I.TensorCopy, api, dst=out, src=broadcast_view(on_chip(y, "y", api), shape, api))
    else:
        issue(I.Memset, api, dst=out, value=_scalar(y, api))
    pred = broadcast_view(condition, shape, api)
    if pred.dtype.kind not in "ub":
        pred = _tensor_scalar(api, pred, "not_equal", 0, dt.uint8)
    src = x
    if isinstance(x, Tensor):
        src = broadcast_view(on_chip(x, "x", api), shape, api)
        if src.dtype != out.dtype:
            src = copy(src, out.dtype, api)
    else:
        src = _scalar(x, api)
    issue(TensorCopyPredicated, api, dst=out, src=src, predicate=pred)
    return out


def copy(x, dtype=None, api: str = "nl.copy") -> Tensor:
    if not isinstance(x, Tensor):
        raise ShapeError(f"{api}: expected a tensor, got {x!r}. At {user_location()}")
    out = new_tile(x.shape, dtype if dtype is not None else x.dtype, api)
    if x.buffer == HBM:
        issue(I.DmaCopy, api, dst=out, src=x)
    else:
        issue(I.TensorCopy, api, dst=out, src=x)
    return out


def broadcast_to(x, shape, dtype=None):
    api = "nl.broadcast_to"
    on_chip(x, "x", api)
    shape = tuple(int(s) for s in shape)
    out = new_tile(shape, dtype if dtype is not None else x.dtype, api)
    issue(I.TensorCopy, api, dst=out, src=broadcast_view(x, shape, api))
    return out


# --- Tensor engine ---------------------------------------------------------------------------------------
def transpose(x, dtype=None):
    """[P, F] -> [F, P] on the Tensor engine; the result is a PSUM tile."""
    api = "nl.transpose"
    on_chip(x, "x", api)
    if x.ndim != 2:
        raise ShapeError(f"{api}: {x.describe()} exceed max supported number of dimensions of 2. "
                         f"At {user_location()}")
    src = copy(x, x.dtype, api) if x.buffer == PSUM else x
    want = dt.canonical(dtype) if dtype is not None else x.dtype
    direct = want in (x.dtype, F32)
    out = new_tile((x.shape[1], x.shape[0]), want if direct else x.dtype, api, PSUM)
    issue(I.Transpose, api, dst=out, src=src, engine=Engine.TENSOR)
    return out if direct else copy(out, want, api)


def matmul(x, y, transpose_x=False):
    """x @ y (x.T @ y with transpose_x=True) into a new fp32 PSUM tile."""
    api = "nl.matmul"
    on_chip(x, "x", api), on_chip(y, "y", api)
    stationary = x
    if not transpose_x:                      # the PE contracts over partitions: transpose x first
        if x.ndim != 2:
            raise ShapeError(f"{api}: x {x.describe()} must be 2-D. At {user_location()}")
        xt_psum = new_tile((x.shape[1], x.shape[0]), x.dtype, api, PSUM)
        issue(I.Transpose, api, dst=xt_psum, src=x, engine=Engine.TENSOR)
        stationary = copy(xt_psum, x.dtype, api)
    out = new_tile((stationary.free_size, y.free_size), F32, api, PSUM)
    issue(I.MatMul, api, dst=out, stationary=stationary, moving=y, accumulate=False)
    return out


# --- data movement ------------------------------------------------------------------------------------------
def load(src, dtype=None):
    api = "nl.load"
    _expect_hbm(src, "src", api)
    out = new_tile(src.shape, dtype if dtype is not None else src.dtype, api)
    issue(I.DmaCopy, api, dst=out, src=src)
    return out


def store(dst, value):
    api = "nl.store"
    _expect_hbm(dst, "dst", api)
    on_chip(value, "value", api)
    if value.buffer == PSUM:                 # DMA cannot read PSUM (0.3+): stage through SBUF
        value = copy(value, value.dtype, api)
    issue(I.DmaCopy, api, dst=dst, src=value)


def load_transpose2d(src, dtype=None):
    api = "nl.load_transpose2d"
    _expect_hbm(src, "src", api)
    if src.ndim != 2:
        raise ShapeError(f"{api}: src {src.describe()} must be 2-D. At {user_location()}")
    out = new_tile((src.shape[1], src.shape[0]), src.dtype, api)
    issue(I.DmaTranspose, api, dst=out, src=src, axes=(1, 0))
    if dtype is not None and dt.canonical(dtype) != src.dtype:
        return copy(out, dtype, api)
    return out


def _expect_hbm(t, name, api):
    if not isinstance(t, Tensor) or t.buffer != HBM:
        where = t.buffer if isinstance(t, Tensor) else type(t).__name__
        raise BufferKindError(f"Expected operand '{name}' of '{api.split('.')[-1]}' to be in address space "
                              f"'hbm', but got a tile in '{where}' instead. At {user_location()}")


# --- creation ------------------------------------------------------------------------------------------------
def memset_tile(shape, dtype, value, kind: str, api: str, name: str = "") -> Tensor:
    loc = user_location()
    dtype = dt.canonical(dtype)
    t = current().new_onchip(kind, tuple(int(s) for s in shape), dtype, name or f"{api.split('.')[-1]}_{next(_ids)}",
                             api=api, loc=loc)
    value = int(value) if dt.is_int(dtype) and float(value) == int(value) else value
    issue(I.Memset, api, dst=t, value=value)
    return t


def identity(n: int, dtype, api: str = "nl.shared_identity_matrix") -> Tensor:
    """An [n, n] identity in SBUF: ones, then affine_select keeps the p == i diagonal."""
    ones = memset_tile((n, n), dtype, 1, SBUF, api)
    out = new_tile((n, n), dtype, api)
    issue(I.AffineSelect, api, dst=out, on_true=ones, on_false_value=0.0, pattern=((-1, int(n)),),
          channel_multiplier=1, cmp_op="equal")
    return out


# --- random numbers (the engine PRNG streams of the ISA: seeded, deterministic) ---------------------------------
def rand(shape, dtype, kind: str = SBUF, name: str = "") -> Tensor:
    """Uniform [0, 1): 32 random bits (rng), the top 24 kept (>> 8), times 2^-24 (exact in fp32)."""
    api = "nl.rand"
    shape = tuple(int(s) for s in shape)
    bits = new_tile(shape, dt.uint32, api)
    issue(RandBits, api, dst=bits, mode="bits", engine=Engine.VECTOR)
    top = new_tile(shape, dt.uint32, api)
    issue(I.TensorScalar, api, dst=top, data=bits, op0="right_shift", operand0=8)
    out = new_tile(shape, dtype, api, kind)
    issue(I.TensorScalar, api, dst=out, data=top, op0="multiply", operand0=2.0 ** -24)
    return out


def random_seed(seed) -> None:
    """Seed the Vector Engine PRNG from a [1, 1] 32-bit tile (or a Python int, placed in one by memset)."""
    api = "nl.random_seed"
    if not isinstance(seed, Tensor):
        seed = memset_tile((1, 1), dt.int32, int(seed), SBUF, api)
    issue(SetRngSeed, api, src_seeds=seed)


def dropout(x, rate, dtype=None) -> Tensor:
    """x with each element zeroed with probability `rate` (no rescaling), on the Vector Engine."""
    api = "nl.dropout"
    on_chip(x, "x", api)
    kept = new_tile(x.shape, x.dtype, api)
    prob = rate if isinstance(rate, Tensor) else _scalar(rate, api)
    issue(Dropout, api, dst=kept, data=x, prob=prob)
    if dtype is None or dt.canonical(dtype) == x.dtype:
        return kept
    return copy(kept, dtype, api)


# --- dispatch of nl.<op>(...) calls ----------------------------------------------------------------------------
_UNARY_SPECIAL = {"negative": negative, "reciprocal": reciprocal, "tan": tan, "logical_not": logical_not,
                  "invert": invert, "copy": lambda x, dtype=None: copy(x, dtype)}


def call(op, *args, **kwargs):
    """nl.<name>(...) used as a tile function (the same objects also serve as op= arguments)."""
    name = op.op_name
    if op.kind == "reduce":
        if name == "mean":
            return mean(*args, **kwargs)
        return reduce(name, *args, api=f"nl.{op.__name__}", **kwargs)
    special = _UNARY_SPECIAL.get(name)
    if special is not None:
        return special(*args, **kwargs)
    if op.kind == "act":
        return activation(name, *args, **kwargs)
    return binary(name, *args, **kwargs)
