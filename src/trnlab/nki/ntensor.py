"""nki.tensor (`import nki.tensor as ntensor`): trace-time constant tensors, built on the host and placed in
HBM by nl.shared_constant, e.g. nl.shared_constant(ntensor.identity(128, dtype=nl.int8), dtype=nl.float16).

A TraceTimeTensor is a numpy array: arithmetic on it (ntensor.zeros(...) + 1) is host numpy, as in AWS's
tracer, where these values exist only at compile time."""
from __future__ import annotations

import numpy as np

from trnlab.core import dtypes as _dt
from trnlab.core.srcloc import user_location as _loc
# The import system binds `nki.tensor` (this module) as the `tensor` attribute of trnlab.nki, where the
# NkiTensor module also lives: re-export its names so either reading of `trnlab.nki.tensor.X` works.
from trnlab.nki.tensor import DynSlice, NkiTensor  # noqa: F401


class TraceTimeTensor(np.ndarray):
    """A host-side constant (numpy subclass); nl.shared_constant turns it into a shared-HBM tensor."""


def _make(values, dtype) -> TraceTimeTensor:
    if dtype is not None:
        values = np.asarray(values).astype(_dt.storage(_dt.canonical(dtype)))
    return np.asarray(values).view(TraceTimeTensor)


def zeros(shape, dtype=None) -> TraceTimeTensor:
    return _make(np.zeros(shape, dtype=np.float32), dtype)


def ones(shape, dtype=None) -> TraceTimeTensor:
    return _make(np.ones(shape, dtype=np.float32), dtype)


def full(shape, fill_value, dtype=None) -> TraceTimeTensor:
    return _make(np.full(shape, fill_value, dtype=np.float32), dtype)


def identity(n, dtype=None) -> TraceTimeTensor:
    """An [n, n] identity matrix."""
    return _make(np.eye(int(n), dtype=np.float32), dtype)


def arange(start, stop=None, step=1, dtype=None) -> TraceTimeTensor:
    """[start, start + step, ...) below stop (numpy.arange semantics)."""
    values = np.arange(start, stop, step) if stop is not None else np.arange(start)
    return _make(values, dtype if dtype is not None else _dt.int32)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise NotImplementedError(f"nki.tensor.{name} is not modelled by trnlab (modelled: zeros, ones, full, "
                              f"identity, arange). At {_loc()}")


__all__ = ["TraceTimeTensor", "zeros", "ones", "full", "identity", "arange"]
