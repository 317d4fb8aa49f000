"""nki.language for the current NKI front end: dtypes, buffers, tensor creation, ranges, op names,
and the convenience tile ops (thin wrappers that issue nki.isa instructions)."""
from __future__ import annotations

import inspect as _inspect
from contextlib import nullcontext as _nullcontext

import numpy as np

from trnlab.core import dtypes as _dt, inputs as _inputs
from trnlab.core.machine import current as _current
from trnlab.core.srcloc import user_location as _loc
from trnlab.core.tensor import HBM as _HBM, PSUM as _PSUM, SBUF as _SBUF
from trnlab.frontend.buffers import Buffer as _Buffer, hbm, private_hbm, psum, sbuf, shared_hbm  # noqa: F401
from trnlab.frontend import spmd as _spmd
from trnlab.errors import NkiValidationError as _NkiValidationError
from trnlab.nki import _tileops
from trnlab.nki._signature import check_module as _check_module, raise_unbound as _raise_unbound
from trnlab.nki.tensor import DynSlice, NkiTensor  # noqa: F401

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
# nl.sbuf, nl.psum, nl.hbm, nl.shared_hbm, nl.private_hbm: trnlab.frontend.buffers (shared by both front ends)


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
def _chip():
    from trnlab.core.machine import has_current
    from trnlab.hw import get_chip
    return _current().chip if has_current() else get_chip()


class _TileSize:
    """nl.tile_size: per-NeuronCore constants of the current target (the running kernel's chip, else the
    NEURON_PLATFORM_TARGET_OVERRIDE / default target)."""

    bn_stats_fmax = 512          # ISA bn_stats: free size <= 512

    @property
    def pmax(self) -> int:
        return _chip().partitions

    @property
    def psum_fmax(self) -> int:
        return _chip().psum_bank_fmax

    psum_bank_fmax = psum_fmax

    @property
    def psum_num_banks(self) -> int:
        return _chip().psum_banks

    @property
    def gemm_stationary_fmax(self) -> int:
        return _chip().gemm_stationary_fmax

    @property
    def gemm_moving_fmax(self) -> int:
        return _chip().gemm_moving_fmax

    @property
    def total_available_sbuf_size(self) -> int:
        return _chip().sbuf_bytes_per_partition

    sbuf_fmax_bytes = total_available_sbuf_size

    @property
    def sbuf_size_bytes(self) -> int:
        return _chip().sbuf_bytes

    def __repr__(self) -> str:
        return f"nl.tile_size(pmax={self.pmax}, psum_fmax={self.psum_fmax}, target={_chip().name})"


tile_size = _TileSize()


# --- tensor creation ------------------------------------------------------------------------------
_counter = [0]


def _name(name: str, prefix: str = "t") -> str:
    if name:
        return name
    _counter[0] += 1
    return f"{prefix}{_counter[0]}"


def ndarray(shape, dtype, buffer=sbuf, name: str = "", address=None) -> NkiTensor:
    """A new uninitialised tensor (NaN-filled; integers hold 4)."""
    loc = _loc()
    kind = _buffer_kind(buffer)
    m = _current()
    shape = _inputs.tensor_shape(shape, f"tensor '{name}'" if name else "tensor", "nl.ndarray", loc)
    if kind == _HBM:
        if buffer is shared_hbm:
            return _shared_hbm(m, shape, dtype, name, loc)[0]
        return m.new_hbm(shape, dtype, _name(name, "hbm"))
    p0, byte = (address if isinstance(address, (tuple, list)) else (0, address)) if address is not None else (0, None)
    return m.new_onchip(kind, shape, dtype, _name(name), api="nl.ndarray", loc=loc, p0=int(p0),
                        address=None if byte is None else int(byte))


def _shared_hbm(m, shape, dtype, name, loc):
    """shared_hbm is one allocation for all programs of an LNC/SPMD launch: the k-th shared_hbm tensor a
    program allocates is the k-th one every other program allocates (programs run in order on one machine,
    or as threads on one machine each, sharing the launch's LncGroup)."""
    group = getattr(m, "lnc_group", None)
    owner = group.shared if group is not None else m.__dict__
    with group.lock if group is not None else _nullcontext():
        state = owner.setdefault("nki_shared_hbm", {"next": {}, "tensors": []})
        k = state["next"].get(m.program_id, 0)
        state["next"][m.program_id] = k + 1
        if k < len(state["tensors"]):
            t = state["tensors"][k]
            if t.shape != shape or t.dtype != _dt.canonical(dtype):
                raise _NkiValidationError(f"nl.ndarray: program {m.program_id} allocates shared_hbm tensor #{k} "
                                          f"as {list(shape)} {_dt.name_of(_dt.canonical(dtype))}, but another "
                                          f"program allocated {t.describe()}; all programs share it. At {loc}")
            return t, False
        t = m.new_hbm(shape, dtype, _name(name, "hbm"))
        state["tensors"].append(t)
        return t, True


def _filled(shape, dtype, buffer, name, value, api):
    kind = _buffer_kind(buffer)
    shape = _inputs.tensor_shape(shape, f"tensor '{name}'" if name else "tensor", api, _loc())
    if kind == _HBM:   # HBM constants are placed by the host, like kernel inputs
        m = _current()
        t, fresh = (_shared_hbm(m, shape, dtype, name, _loc()) if buffer is shared_hbm
                    else (m.new_hbm(shape, dtype, _name(name, "hbm")), True))
        if fresh:
            t.write(np.full(shape, value, dtype=np.float32))
        return t
    return _tileops.memset_tile(shape, dtype, value, kind, api, name)


def zeros(shape, dtype, buffer=sbuf, name: str = "") -> NkiTensor:
    """A new tensor filled with 0 (on-chip: a memset instruction)."""
    return _filled(shape, dtype, buffer, name, 0, "nl.zeros")


def ones(shape, dtype, buffer=sbuf, name: str = "") -> NkiTensor:
    return _filled(shape, dtype, buffer, name, 1, "nl.ones")


def full(shape, fill_value, dtype, buffer=sbuf, name: str = "") -> NkiTensor:
    return _filled(shape, dtype, buffer, name, fill_value, "nl.full")


def zeros_like(x, dtype=None, buffer=None, name: str = "") -> NkiTensor:
    return zeros(x.shape, dtype if dtype is not None else x.dtype, _like_buffer(x, buffer), name)


def empty_like(x, dtype=None, buffer=None, name: str = "") -> NkiTensor:
    """New, uninitialised storage with x's shape (and dtype unless given)."""
    return ndarray(x.shape, dtype if dtype is not None else x.dtype, _like_buffer(x, buffer), name)


def _like_buffer(a, buffer):
    if buffer is not None:
        return buffer
    return {_SBUF: sbuf, _PSUM: psum}.get(getattr(a, "buffer", _SBUF), shared_hbm)


def shared_identity_matrix(n, dtype=uint8, dst=None) -> NkiTensor:
    """An [n, n] identity matrix in SBUF (built on chip by memset + affine_select)."""
    if dst is not None:
        raise NotImplementedError(f"nl.shared_identity_matrix(dst=...) is not modelled by trnlab; use the "
                                  f"returned tile. At {_loc()}")
    return _tileops.identity(int(n), dtype if dtype is not None else uint8)


def shared_constant(constant, dtype=None) -> NkiTensor:
    """A shared-HBM tensor holding the given host data."""
    arr = np.asarray(constant)
    if dtype is None:   # a 64-bit host constant (numpy's default) is narrowed only when exact
        arr = _inputs.narrow_exact(arr, "the constant", "nl.shared_constant", _loc())
    return _current().hbm_tensor(arr, _name("", "const"), dtype=dtype if dtype is not None else arr.dtype)


def ds(start, size, step=1) -> DynSlice:
    if isinstance(start, NkiTensor) or not hasattr(start, "__index__") and not isinstance(start, float):
        raise NotImplementedError(
            f"nl.ds with a runtime start ({type(start).__name__}) is not modelled by trnlab; a compile-time "
            f"int start is, and a runtime offset can be spelled t.ap(pattern, scalar_offset=...). At {_loc()}")
    return DynSlice(start, size, step)


# --- ranges (hints; all run as ordinary Python loops, in order) -------------------------------------
def affine_range(start, stop=None, step=1):
    return range(start) if stop is None else range(start, stop, step)


def sequential_range(start, stop=None, step=1):
    return range(start) if stop is None else range(start, stop, step)


def static_range(start, stop=None, step=1):
    return range(start) if stop is None else range(start, stop, step)


dynamic_range = sequential_range


def program_id(axis: int = 0) -> int:
    return int(_current().program_id[axis])


num_programs = _spmd.num_programs
program_ndim = _spmd.program_ndim


class _NKIObjectType(type):
    """AWS's compiler gives every NKIObject class an __init__ taking its attributes as keywords (even a
    @dataclass whose fields are unannotated class attributes): keywords the class's own __init__ does not
    take are set as attributes after it runs."""

    def __call__(cls, *args, **kwargs):
        params = _inspect.signature(cls.__init__).parameters
        if _inspect.Parameter.VAR_KEYWORD in {p.kind for p in params.values()}:   # (nl.any shadows any)
            return super().__call__(*args, **kwargs)
        extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in params}
        unknown = sorted(k for k in extra if not hasattr(cls, k))
        if unknown:
            raise _NkiValidationError(f"{cls.__name__}(): unknown keyword argument(s) {unknown}; an NKIObject "
                                     f"takes its class attributes as keywords. At {_loc()}")
        obj = super().__call__(*args, **kwargs)
        for k, v in extra.items():
            setattr(obj, k, v)
        return obj


class NKIObject(metaclass=_NKIObjectType):
    """Base class for kernel configuration objects (the NKI compiler requires it)."""


def device_print(print_prefix, tensor) -> None:
    """Print a tensor's values (simulation only); also recorded in the machine's `printed` list."""
    m = _current()
    if isinstance(tensor, NkiTensor):
        values = (_dt.to_fp32(tensor.read("nl.device_print", _loc())) if _dt.is_float(tensor.dtype)
                  else tensor.numpy())
        text = f"{print_prefix} {np.array2string(np.asarray(values), threshold=1 << 16)}"
    else:
        text = f"{print_prefix} {tensor}"
    m.printed.append(text)
    print(text)


def expand_dims(x, axis):
    """A view of x with a new size-1 dim at `axis`."""
    return x.expand_dim(axis)


# --- convenience tile functions (thin wrappers that issue nki.isa instructions; see _tileops) ---------------
load = _tileops.load
store = _tileops.store
load_transpose2d = _tileops.load_transpose2d
matmul = _tileops.matmul
transpose = _tileops.transpose
softmax = _tileops.softmax
rms_norm = _tileops.rms_norm
where = _tileops.where
broadcast_to = _tileops.broadcast_to


# --- random numbers (deterministic: the machine's seeded per-engine PRNG streams) ---------------------
def rand(shape, dtype=float32, buffer=sbuf, name: str = "") -> NkiTensor:
    """A new tile of uniform [0, 1) values (rng bits on the Vector Engine, scaled to dtype)."""
    kind = _buffer_kind(buffer)
    if kind == _HBM:
        raise _NkiValidationError(f"nl.rand: buffer must be nl.sbuf or nl.psum, got {buffer!r}. At {_loc()}")
    shape = shape if isinstance(shape, (tuple, list)) else (shape,)
    return _tileops.rand(shape, dtype, kind, name)


def random_seed(seed) -> None:
    """Seed the random numbers of nl.rand / nl.dropout: a [1, 1] 32-bit tile (or a Python int)."""
    _tileops.random_seed(seed)


def dropout(x, rate, dtype=None) -> NkiTensor:
    """x with elements zeroed with probability `rate` (a scalar or [P, 1] tile); kept values are not rescaled."""
    return _tileops.dropout(x, rate, dtype)


def _not_modelled(name):
    def fn(*args, **kwargs):
        raise NotImplementedError(f"nki.language.{name} is not modelled by trnlab. At {_loc()}")
    fn.__name__ = name
    return fn


for _api in ("fori_loop", "while_loop"):
    globals()[_api] = _not_modelled(_api)


def gather_flattened(data, indices, axis=0, dtype=None):
    raise NotImplementedError(f"nki.language.gather_flattened is not modelled by trnlab. At {_loc()}")


# --- ALU operators and activation functions (usable as op=... and as tile functions) ----------------
class _Op:
    """An ALU operator / activation function name that can also be called as a tile function."""

    def __init__(self, name: str, kind: str, public: str | None = None):
        self.op_name = name          # the ISA name (nl.max -> "maximum")
        self.kind = kind             # "alu" | "act" | "reduce"
        self.__name__ = public or name
        self.__signature__ = _OP_SIGNATURES["all" if self.__name__ in ("all", "any") else
                                            "unary" if self.__name__ in _UNARY_ALU else kind]

    def __repr__(self) -> str:
        return f"nl.{self.__name__}"

    def __call__(self, *args, **kwargs):
        try:
            bound = self.__signature__.bind(*args, **kwargs)
        except TypeError:
            _raise_unbound(f"nl.{self.__name__}", self.__signature__, args, kwargs)
        return _tileops.call(self, *bound.args, **bound.kwargs)


def _sig(text: str) -> _inspect.Signature:
    """A signature from a parameter list written as in AWS's docs."""
    scope: dict = {}
    exec(f"def f({text}): pass", scope)  # noqa: S102  (a constant parameter list, not user input)
    return _inspect.signature(scope["f"])


# AWS's signatures of nl.<op>(...) used as a tile function (nki.language reference).
_OP_SIGNATURES = {"alu": _sig("x, y, dtype=None"), "act": _sig("x, dtype=None"), "unary": _sig("x, dtype=None"),
                  "reduce": _sig("x, axis, dtype=None, keepdims=False"), "all": _sig("x, axis, dtype=None")}


_UNARY_ALU = {"invert"}    # ALU operators whose tile function takes one tile: nl.invert(x, dtype=None)
_ALU = ["add", "subtract", "multiply", "divide", "maximum", "minimum", "power", "equal", "not_equal",
        "greater", "greater_equal", "less", "less_equal", "logical_and", "logical_or", "logical_xor",
        "bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift", "abs_max", "abs_min", "mod",
        "fmod", "logical_shift_left", "logical_shift_right", "arith_shift_right", "invert"]
_ACT = ["exp", "log", "tanh", "sigmoid", "relu", "gelu", "gelu_dx", "gelu_apprx_tanh", "gelu_apprx_sigmoid",
        "gelu_apprx_sigmoid_dx", "silu", "silu_dx", "softplus", "mish", "erf", "erf_dx", "sin", "cos", "tan",
        "arctan", "sqrt", "rsqrt", "reciprocal", "sign", "abs", "square", "copy", "identity", "negative",
        "floor", "ceil", "trunc", "prelu", "softsign", "logical_not"]

for _n in _ALU:
    globals()[_n] = _Op(_n, "alu")
for _n in _ACT:
    globals()[_n] = _Op(_n, "act")
bypass = _Op("bypass", "alu")
max = _Op("maximum", "reduce", "max")          # noqa: A001  (nl.max / nl.min / nl.sum are reductions)
min = _Op("minimum", "reduce", "min")          # noqa: A001
sum = _Op("add", "reduce", "sum")              # noqa: A001
mean = _Op("mean", "reduce")
prod = _Op("multiply", "reduce", "prod")
all = _Op("logical_and", "reduce", "all")      # noqa: A001
any = _Op("logical_or", "reduce", "any")       # noqa: A001


_check_module(globals(), "nl", [k for k, v in list(globals().items())
                                if not k.startswith("_") and _inspect.isfunction(v)])
