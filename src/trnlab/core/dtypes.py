"""Data types. Low-precision floats come from ml_dtypes; every engine write rounds through them.

Legacy NKI float8_e4m3 is ml_dtypes.float8_e4m3 (IEEE-like, max 240), not OCP e4m3fn (max 448).
tfloat32 has no ml_dtypes type: it is stored as float32 and rounded to a 10-bit mantissa on write.
"""
from __future__ import annotations

import contextvars

import ml_dtypes
import numpy as np

from trnlab.errors import DtypeError


class TF32Type:
    """Marker for tfloat32 (stored as float32, 10 explicit mantissa bits)."""

    name = "tfloat32"
    itemsize = 4
    kind = "f"

    def __repr__(self) -> str:
        return "tfloat32"


tfloat32 = TF32Type()

bfloat16 = np.dtype(ml_dtypes.bfloat16)
float8_e4m3 = np.dtype(ml_dtypes.float8_e4m3)
float8_e4m3fn = np.dtype(ml_dtypes.float8_e4m3fn)
float8_e5m2 = np.dtype(ml_dtypes.float8_e5m2)
float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
int8, int16, int32 = np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.int32)
uint8, uint16, uint32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32)
bool_ = np.dtype(np.bool_)

_BY_NAME = {
    "bfloat16": bfloat16, "bf16": bfloat16,
    "float8_e4m3": float8_e4m3, "fp8_e4m3": float8_e4m3,
    "float8_e4m3fn": float8_e4m3fn, "float8_e5m2": float8_e5m2, "fp8_e5m2": float8_e5m2,
    "float16": float16, "fp16": float16, "half": float16,
    "float32": float32, "fp32": float32, "float": float32,
    "tfloat32": tfloat32, "tf32": tfloat32,
    "int8": int8, "int16": int16, "int32": int32,
    "uint8": uint8, "uint16": uint16, "uint32": uint32,
    "bool": bool_, "bool_": bool_,
}
# No 64-bit or complex types: AWS's NKI dtype table has none, so they are refused, never narrowed.
SUPPORTED_NAMES = ("bfloat16, float16, float32, tfloat32, float8_e4m3, float8_e4m3fn, float8_e5m2, "
                   "int8, int16, int32, uint8, uint16, uint32, bool")

LOW_PRECISION_FLOATS = (bfloat16, float16, float8_e4m3, float8_e4m3fn, float8_e5m2)
FP8 = (float8_e4m3, float8_e4m3fn, float8_e5m2)


def canonical(dt) -> "np.dtype | TF32Type":
    """Any dtype spelling (numpy, ml_dtypes, string, torch) -> a supported dtype."""
    if dt is tfloat32 or isinstance(dt, TF32Type):
        return tfloat32
    if isinstance(dt, np.dtype) and dt in _SUPPORTED:
        return dt
    name = getattr(dt, "name", None) if not isinstance(dt, str) else dt
    if isinstance(dt, str) or name is None:
        key = str(dt)
    else:
        key = str(name)
    key = key.replace("torch.", "")
    if key in _BY_NAME:
        return _BY_NAME[key]
    try:
        npdt = np.dtype(dt)
    except TypeError:
        raise DtypeError(_unsupported(dt)) from None
    if npdt.name in _BY_NAME:
        return _BY_NAME[npdt.name]
    raise DtypeError(_unsupported(npdt))


def _unsupported(dt) -> str:
    name = getattr(dt, "name", None) or repr(dt)
    hint = ("; the chip has no 64-bit types: cast on the host (e.g. x.astype(np.float32) or np.int32)"
            if isinstance(dt, np.dtype) and dt.itemsize == 8 and dt.kind in "fiu" else "")
    return f"unsupported dtype {name}: NKI tensors hold {SUPPORTED_NAMES}{hint}"


_SUPPORTED = {bfloat16, float8_e4m3, float8_e4m3fn, float8_e5m2, float16, float32,
              int8, int16, int32, uint8, uint16, uint32, bool_}


def storage(dt) -> np.dtype:
    """The numpy dtype that holds values of dt."""
    return float32 if dt is tfloat32 else dt


# id(numpy dtype) -> (dtype, its name): np.dtype.name is computed in Python on every access, and hashing
# a dtype (ml_dtypes' included) costs about as much, so the cache is keyed by identity; the entry holds
# the dtype, so its id is never reused while cached
_NAMES: dict = {}
_NAMES_MAX = 1 << 12


def name_of(dt) -> str:
    if dt is tfloat32:
        return "tfloat32"
    entry = _NAMES.get(id(dt))
    if entry is not None and entry[0] is dt:
        return entry[1]
    if len(_NAMES) >= _NAMES_MAX:
        _NAMES.clear()
    name = dt.name
    _NAMES[id(dt)] = (dt, name)
    return name


def itemsize(dt) -> int:
    return 4 if dt is tfloat32 else dt.itemsize


def is_float(dt) -> bool:
    return dt is tfloat32 or dt.kind == "f" or dt in LOW_PRECISION_FLOATS


def is_int(dt) -> bool:
    return dt is not tfloat32 and dt.kind in "iub"


def fill_value(dt):
    """What a fresh, uninitialised tile holds: NaN for floats, 4 for integers (as AWS's simulator)."""
    return np.nan if is_float(dt) else 4


def _round_tf32(x: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    lsb = (bits >> 13) & 1
    rounded = ((bits + 0xFFF + lsb) & 0xFFFFE000).astype(np.uint32)
    finite = np.isfinite(x)
    return np.where(finite, rounded.view(np.float32), x).astype(np.float32)


def cast(values, dt) -> np.ndarray:
    """Round fp32 (or integer) engine results to the destination dtype, as the hardware does on write.

    Floats -> low precision: round to nearest even (ml_dtypes). Floats -> integers: round to nearest
    and saturate. (AWS's NKI_PRECISE_FP=0 fp32-everywhere mode is not modelled: Machine refuses it.)"""
    values = np.asarray(values)
    if dt is tfloat32:
        return _round_tf32(values)
    if values.dtype == dt:
        return values
    if dt.kind in "iu" and values.dtype.kind == "f" or (dt.kind in "iu" and values.dtype in LOW_PRECISION_FLOATS):
        info = np.iinfo(dt)
        v = np.nan_to_num(np.rint(values.astype(np.float64)), nan=0.0)
        return np.clip(v, info.min, info.max).astype(dt)
    if dt == bool_:
        return values.astype(bool)
    if dt is bfloat16 and values.dtype == float32:
        rng = _stochastic_rng.get()
        if rng is not None:
            return stochastic_round_bf16(values, rng)
    return values.astype(dt)


# The Generator of the Machine whose instruction is executing with stochastic rounding on (None: round to
# nearest even). Machine.issue sets it around one instruction's execution: only engine and DMA writes of
# that machine round stochastically, host-side casts never do.
_stochastic_rng: contextvars.ContextVar = contextvars.ContextVar("trnlab_stochastic_rounding", default=None)


class stochastic_rounding:
    """Context manager: fp32 -> bf16 casts inside round stochastically with `rng` (None: unchanged)."""

    def __init__(self, rng):
        self.rng = rng
        self._token = None

    def __enter__(self):
        self._token = _stochastic_rng.set(self.rng)
        return self.rng

    def __exit__(self, *exc) -> None:
        _stochastic_rng.reset(self._token)


def stochastic_round_bf16(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """fp32 -> bf16 by stochastic rounding: round up (away from zero) with probability equal to the
    distance from the lower-magnitude bf16 neighbour in units of the gap, so the rounding is unbiased.

    Stochastic rounding is defined on the bits (AWS Neuron rounding modes,
    https://awsdocs-neuron.readthedocs-hosted.com/en/latest/general/arch/neuron-features/rounding-modes.html):
    add a uniform random integer in [0, 2^16) to the fp32 bit pattern and truncate the low 16 bits.
    ml_dtypes has no stochastic mode, hence the bit-level code here (every other rounding is ml_dtypes).
    The magnitude carries into the exponent when it rounds up across a binade (and past the largest
    finite bf16 to inf, like round-up); NaN and inf are returned unchanged."""
    x = np.ascontiguousarray(values, dtype=np.float32)
    noise = rng.integers(0, 1 << 16, size=x.shape, dtype=np.uint32)
    bits = (x.view(np.uint32) + noise) & np.uint32(0xFFFF0000)
    rounded = np.where(np.isfinite(x), bits.view(np.float32), x)
    return rounded.astype(bfloat16)         # exact: the low 16 bits are zero


def to_fp32(values: np.ndarray) -> np.ndarray:
    """How an engine reads its inputs: upcast to fp32 (integers stay integers for bit-exact ALU ops)."""
    if values.dtype == float32:
        return values
    if values.dtype.kind in "iub":
        return values
    return values.astype(np.float32)
