"""Checks on what users hand the simulator, applied in one place for every front end: kernel arguments
(runtime argument conversion) and new tensors (Machine.new_hbm / new_onchip).

Each refusal is a typed error naming the argument or tensor, the limit, the value and the source line.
"""
from __future__ import annotations

import math
import os

import numpy as np

from trnlab.core import dtypes as dt, srcloc
from trnlab.errors import DtypeError, HostMemoryError, KernelArgumentError, ShapeError


# --- new tensors ------------------------------------------------------------------------------------
def new_tensor(shape, dtype, name: str, api: str, loc: str):
    """(shape as a tuple of ints >= 1, canonical dtype) of a tensor about to be allocated."""
    what = f"tensor '{name}'" if name else "tensor"
    return tensor_shape(shape, what, api, loc), tensor_dtype(dtype, what, api, loc)


def tensor_shape(shape, what: str, api: str, loc: str) -> tuple:
    if type(shape) is tuple:            # the common case, checked without a generator
        for d in shape:
            if type(d) is not int or d < 1:
                break
        else:
            return shape
    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            hint = " (use // for integer division)" if isinstance(d, float) and d.is_integer() else ""
            raise ShapeError(f"{api}: {what} has shape {list(dims)}: dimension {d!r} is a "
                             f"{type(d).__name__}, not an int{hint}. At {loc}")
        if d < 1:
            raise ShapeError(f"{api}: {what} has shape {[int(x) for x in dims]}: every dimension must be "
                             f">= 1, got {int(d)}{' (a zero-size tensor)' if d == 0 else ''}. At {loc}")
    return tuple(int(d) for d in dims)


def tensor_dtype(dtype, what: str, api: str, loc: str):
    try:
        return dt.canonical(dtype)
    except DtypeError as exc:
        raise DtypeError(f"{api}: {what}: {exc}. At {loc}") from None


def nbytes(shape: tuple, dtype) -> int:
    """Exact byte count (Python ints: no int64 overflow for absurd shapes)."""
    return math.prod(shape) * dt.itemsize(dtype)


# --- host memory ------------------------------------------------------------------------------------
def host_available_bytes() -> int | None:
    """Memory the host can still give (MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def host_can_hold(size: int, name: str, shape: tuple, api: str, loc: str) -> None:
    """A simulated tensor is a host array: refuse one the host cannot hold (the device might) before
    numpy tries, instead of a MemoryError or the OOM killer."""
    available = host_available_bytes()
    if available is not None and size > available:
        raise HostMemoryError(
            f"{api}: tensor '{name}' {list(shape)} needs {size} B of host memory to simulate; the host has "
            f"{available} B available. Run with smaller shapes, or with numerics off (timing only). At {loc}",
            required=size, limit=available)


# --- kernel arguments -------------------------------------------------------------------------------
def kernel_call(fn, args: tuple, kwargs: dict, loc: str) -> None:
    """The host call must bind to the kernel's parameters: a typed error naming the kernel, its
    parameters and the call line, instead of a bare TypeError from inside the launch."""
    import inspect
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        name = getattr(fn, "__name__", "kernel")
        raise KernelArgumentError(f"kernel call: {name}{sig}: {exc}. At {loc}") from None


def kernel_argument(arr: np.ndarray, arg: str, loc: str) -> np.ndarray:
    """A host array about to be placed in HBM as kernel argument `arg`."""
    what = f"kernel argument '{arg}'"
    tensor_dtype(arr.dtype, what, "kernel call", loc)
    if arr.size == 0:
        raise ShapeError(f"kernel call: {what} has shape {list(arr.shape)}: a zero-size tensor cannot be "
                         f"placed in HBM (every dimension must be >= 1). At {loc}")
    return arr


def narrow_exact(arr: np.ndarray, what: str, api: str, loc: str) -> np.ndarray:
    """A 64-bit host constant as float32/int32 when every value survives the narrowing; refused otherwise."""
    if arr.dtype.itemsize != 8 or arr.dtype.kind not in "fiu":
        return arr
    narrow = arr.astype({"f": np.float32, "i": np.int32, "u": np.uint32}[arr.dtype.kind])
    with np.errstate(invalid="ignore", over="ignore"):
        exact = np.array_equal(narrow.astype(arr.dtype), arr, equal_nan=arr.dtype.kind == "f")
    if not exact:
        raise DtypeError(f"{api}: {what} is {arr.dtype.name} and its values do not fit {narrow.dtype.name} "
                         f"exactly; pass dtype= or cast on the host. At {loc}")
    return narrow


def mixed_sequence(arg: str, value, loc: str) -> KernelArgumentError:
    kinds = sorted({type(v).__name__ for v in value})
    return KernelArgumentError(
        f"kernel call: kernel argument '{arg}' is a {type(value).__name__} mixing arrays with other values "
        f"({', '.join(kinds)}): a sequence argument is either all arrays (each placed in HBM) or has none "
        f"(a static value). At {loc}")


def static_used_as_tensor(exc: AttributeError, statics: dict) -> KernelArgumentError | None:
    """The kernel used a static (non-array) argument as a tensor: name it instead of a bare AttributeError."""
    obj = getattr(exc, "obj", None)
    for arg, value in statics.items():
        if obj is value and value is not None:
            if isinstance(value, (tuple, list)) and value and all(hasattr(v, "storage") for v in value):
                shown = f"{len(value)} HBM tensors, one per array"
                rule = "a sequence of arrays reaches the kernel as a sequence of tensors"
            else:
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                rule = ("only numpy arrays and torch tensors are placed in HBM; other arguments reach the "
                        "kernel as static Python values")
            return KernelArgumentError(
                f"kernel argument '{arg}' is a {type(value).__name__} ({shown}), not a tensor: {rule}, and "
                f"the kernel used it as a tensor ({exc}). At {_frame_of(exc)}")
    return None


def _frame_of(exc: BaseException) -> str:
    """file:line of the innermost kernel (non-trnlab) frame of the traceback."""
    tb, loc = exc.__traceback__, "<unknown>"
    while tb is not None:
        if not srcloc._skipped(tb.tb_frame.f_code.co_filename):
            loc = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return loc


# --- ISA operands -----------------------------------------------------------------------------------
_NOT_TENSORS = (str, bytes, bool, int, float, complex, np.ndarray, np.generic, list, tuple, dict, type(None))


def non_tensor_operand(instr) -> ShapeError | None:
    """An error naming the first required tensor operand of instr that is plainly not a tensor (a string,
    a number, None, a host numpy array, ...), else None. Called after an instruction failed, so it costs
    nothing on the normal path."""
    import dataclasses
    for f in dataclasses.fields(instr):
        value = getattr(instr, f.name)
        if f.type == "Tensor" and isinstance(value, _NOT_TENSORS):
            hint = (" (a host numpy array is placed in HBM only as a kernel argument or through "
                    "nl.shared_constant)" if isinstance(value, np.ndarray) else "")
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            return ShapeError(f"{instr.api}: operand '{f.name}' must be a tensor, got {type(value).__name__} "
                              f"{shown}{hint}. At {instr.loc}")
    return None
