"""NkiTensor: the current front end's tensor (views by slicing, nl.ds, reshape/permute/.ap/.view)."""
from __future__ import annotations

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.srcloc import user_location
from trnlab.core.tensor import HBM, Tensor
from trnlab.errors import NkiValidationError


class DynSlice:
    """nl.ds(start, size[, step]): a slice of `size` elements from `start`."""

    __slots__ = ("start", "size", "step")

    def __init__(self, start, size, step=1):
        self.start, self.size, self.step = int(start), int(size), int(step)

    def as_slice(self) -> slice:
        return slice(self.start, self.start + self.size * self.step, self.step)

    def __repr__(self) -> str:
        return f"ds({self.start}, {self.size})"


class NkiTensor(Tensor):
    __slots__ = ()

    def __getitem__(self, key) -> "NkiTensor":
        loc = user_location()
        if not isinstance(key, tuple):
            key = (key,)
        key = tuple(k.as_slice() if isinstance(k, DynSlice) else k for k in key)
        if self.on_chip:
            key = self._keep_rank(key)
        return self.index(key, api="indexing", loc=loc)

    def _keep_rank(self, key: tuple) -> tuple:
        """On-chip: an int on the partition dim keeps a size-1 dim; an int on a free dim drops it
        unless the result would fall below 2-D."""
        if any(k is Ellipsis or k is None for k in key):
            return key
        ints = [i for i, k in enumerate(key) if not isinstance(k, slice)]
        out = list(key)
        remaining = self.ndim - len(ints)
        for i in ints:
            if i == 0 or remaining < 2:
                v = int(key[i])
                v = v + self.shape[i] if v < 0 else v
                out[i] = slice(v, v + 1)
                remaining += 1
        return tuple(out)

    def __setitem__(self, key, value):
        raise NkiValidationError("the current NKI front end has no tensor assignment: write with a nisa "
                                 f"call (dst=...). At {user_location()}")

    # --- views ---
    def view(self, dtype) -> "NkiTensor":
        return self.bitcast(dtype)

    def broadcast(self, dim: int, size: int) -> "NkiTensor":
        shape = list(self.shape)
        shape[dim] = size
        return self.broadcast_to(tuple(shape))

    def ap(self, pattern, offset: int = 0, scalar_offset=None, vector_offset=None, indirect_dim=0,
           dtype=None):
        if scalar_offset is not None or vector_offset is not None:
            raise NotImplementedError("NkiTensor.ap(scalar_offset=/vector_offset=) (dynamic access patterns) "
                                      f"is not modelled yet. At {user_location()}")
        t = super().ap(pattern, offset)
        return t.bitcast(dtype) if dtype is not None else t

    def transpose(self, *axes):
        return self.permute(*axes) if axes else self.permute(tuple(reversed(range(self.ndim))))

    @property
    def T(self):
        return self.transpose()

    def __iter__(self):
        raise TypeError("NKI tensors are not iterable; index them explicitly")
