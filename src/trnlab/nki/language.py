"""nki.language for the current NKI front end: dtypes, buffers, tensor creation, ranges, op names,
and the convenience tile ops (thin wrappers that issue nki.isa instructions)."""
from __future__ import annotations

import numpy as np

from trnlab.core import dtypes as _dt
from trnlab.core.machine import current as _current
from trnlab.core.srcloc import user_location as _loc
from trnlab.core.tensor import HBM as _HBM, PSUM as _PSUM, SBUF as _SBUF
from trnlab.errors import NkiValidationError as _NkiValidationError
from trnlab.nki.tensor import DynSlice, NkiTensor

# --- dtypes ---------------------------------------------------------------------------------------
bfloat16 = _dt.bfloat16
float16 = _dt.float16
float32 = _dt.float32
fp32 = _dt.float32
tfloat32 = _dt.tfloat32
float8_e4m3 = _dt.float8_e4m3
float8_e4m3fn = _dt.float8_e4m3fn
float8_e5m2 = _dt.float8_e5m2
int8, int16, int32 = _dt.int8, _dt.int16, _dt.int32
uint8, uint16, uint32 = _dt.uint8, _dt.uint16, _dt.uint32
bool_ = _dt.bool_


# --- buffers --------------------------------------------------------------------------------------
class _Buffer:
    def __init__(self, name: str, kind: str):
        self.name, self.kind = name, kind

    def __repr__(self) -> str:
        return f"nl.{self.name}"


sbuf = _Buffer("sbuf", _SBUF)
psum = _Buffer("psum", _PSUM)
hbm = _Buffer("hbm", _HBM)
shared_hbm = _Buffer("shared_hbm", _HBM)
private_hbm = _Buffer("private_hbm", _HBM)


def _buffer_kind(buffer) -> str:
    if isinstance(buffer, _Buffer):
        return buffer.kind
    if buffer is None:
        return _SBUF
    kind = getattr(buffer, "kind", None)
    if kind in (_SBUF, _PSUM, _HBM):
        return kind
    raise _NkiValidationError(f"nl.ndarray: buffer must be nl.sbuf, nl.psum, nl.hbm, nl.shared_hbm or "
                              f"nl.private_hbm, got {buffer!r}. At {_loc()}")


# --- tile sizes -----------------------------------------------------------------------------------
class _TileSize:
    """nl.tile_size: per-NeuronCore constants of the current target."""

    pmax = 128
    psum_fmax = 512
    psum_bank_fmax = 512
    gemm_stationary_fmax = 128
    gemm_moving_fmax = 512
    bn_stats_fmax = 512
    psum_num_banks = 8

    @property
    def total_available_sbuf_size(self) -> int:
        from trnlab.hw import get_chip
        return get_chip().sbuf_bytes_per_partition

    sbuf_fmax_bytes = total_available_sbuf_size


tile_size = _TileSize()


# --- tensor creation ------------------------------------------------------------------------------
_counter = [0]


def _name(name: str, prefix: str = "t") -> str:
    if name:
        return name
    _counter[0] += 1
    return f"{prefix}{_counter[0]}"


def ndarray(shape, dtype, buffer=sbuf, name: str = "", address=None, **_) -> NkiTensor:
    """A new uninitialised tensor (NaN-filled; integers hold 4)."""
    loc = _loc()
    kind = _buffer_kind(buffer)
    m = _current()
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    if kind == _HBM:
        return m.new_hbm(shape, dtype, _name(name, "hbm"))
    p0, byte = (address if isinstance(address, (tuple, list)) else (0, address)) if address is not None else (0, None)
    return m.new_onchip(kind, shape, dtype, _name(name), api="nl.ndarray", loc=loc, p0=int(p0),
                        address=None if byte is None else int(byte))


def _filled(shape, dtype, buffer, name, value, api):
    loc = _loc()
    kind = _buffer_kind(buffer)
    m = _current()
    shape = tuple(int(s) for s in shape)
    if kind == _HBM:
        t = m.new_hbm(shape, dtype, _name(name, "hbm"))
        t.write(np.full(shape, value, dtype=np.float32))
        return t
    return m.new_onchip(kind, shape, dtype, _name(name), api=api, loc=loc, fill=value)


def zeros(shape, dtype, buffer=sbuf, name: str = "", **_) -> NkiTensor:
    return _filled(shape, dtype, buffer, name, 0.0, "nl.zeros")


def ones(shape, dtype, buffer=sbuf, name: str = "", **_) -> NkiTensor:
    return _filled(shape, dtype, buffer, name, 1.0, "nl.ones")


def full(shape, fill_value, dtype, buffer=sbuf, name: str = "", **_) -> NkiTensor:
    return _filled(shape, dtype, buffer, name, fill_value, "nl.full")


def ds(start, size, step=1) -> DynSlice:
    return DynSlice(start, size, step)


# --- ranges (hints; all run as ordinary Python loops, in order) -------------------------------------
def affine_range(*args, **_):
    return range(*args)


def sequential_range(*args, **_):
    return range(*args)


def static_range(*args, **_):
    return range(*args)


dynamic_range = sequential_range


def program_id(axis: int = 0) -> int:
    return int(_current().program_id[axis])


def num_programs(axes=None) -> int:
    grid = _current().num_programs
    if axes is None:
        return int(np.prod(grid))
    if isinstance(axes, int):
        return int(grid[axes]) if axes < len(grid) else 1
    return int(np.prod([grid[a] for a in axes]))


def program_ndim() -> int:
    return len(_current().num_programs)


class NKIObject:
    """Base class for kernel configuration objects (the NKI compiler requires it)."""


# --- ALU operators and activation functions (usable as op=... and as tile functions) ----------------
class _Op:
    """An ALU operator / activation function name that can also be called as a tile op."""

    def __init__(self, name: str, kind: str):
        self.op_name = name
        self.kind = kind          # "alu" | "act" | "both"
        self.__name__ = name

    def __repr__(self) -> str:
        return f"nl.{self.op_name}"

    def __call__(self, *args, **kwargs):
        from trnlab.nki import _tileops
        return _tileops.call(self, *args, **kwargs)


_ALU = ["add", "subtract", "multiply", "divide", "maximum", "minimum", "power", "equal", "not_equal",
        "greater", "greater_equal", "less", "less_equal", "logical_and", "logical_or", "logical_xor",
        "bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift", "abs_max", "mod", "fmod",
        "logical_shift_left", "logical_shift_right", "arith_shift_right"]
_ACT = ["exp", "log", "tanh", "sigmoid", "relu", "gelu", "gelu_dx", "gelu_apprx_tanh", "gelu_apprx_sigmoid",
        "silu", "silu_dx", "softplus", "mish", "erf", "erf_dx", "sin", "cos", "arctan", "sqrt", "rsqrt",
        "reciprocal", "sign", "abs", "square", "copy", "identity", "negative", "floor", "ceil", "trunc",
        "prelu", "softsign"]

for _n in _ALU:
    globals()[_n] = _Op(_n, "alu")
for _n in _ACT:
    globals()[_n] = _Op(_n, "act")
bypass = _Op("bypass", "alu")
max = _Op("maximum", "reduce")          # noqa: A001  (nl.max / nl.min / nl.sum are reductions)
min = _Op("minimum", "reduce")          # noqa: A001
sum = _Op("add", "reduce")              # noqa: A001
mean = _Op("mean", "reduce")
prod = _Op("multiply", "reduce")
all = _Op("logical_and", "reduce")      # noqa: A001
any = _Op("logical_or", "reduce")       # noqa: A001
