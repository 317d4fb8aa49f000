"""Index helpers shared by both NKI front ends."""
from __future__ import annotations

import operator


class DynSlice:
    """nl.ds(start, size[, step]): a slice of `size` elements from `start`."""

    __slots__ = ("start", "size", "step")

    def __init__(self, start, size, step=1):
        self.start = _int(start, "start")
        self.size, self.step = _int(size, "size", 1), _int(step, "step", 1)

    def as_slice(self) -> slice:
        return slice(self.start, self.start + self.size * self.step, self.step)

    def __repr__(self) -> str:
        return f"ds({self.start}, {self.size})"


def _int(v, what: str, low: int | None = None) -> int:
    """nl.ds bounds are compile-time ints: a float or a size/step below 1 is refused, not truncated."""
    try:
        i = operator.index(v)
    except TypeError:
        i = None
    if i is None or (low is not None and i < low):
        from trnlab.core.srcloc import user_location
        from trnlab.errors import ShapeError
        rule = "an int" if low is None else f"an int >= {low}"
        raise ShapeError(f"nl.ds: {what} must be {rule}, got {v!r}. At {user_location()}")
    return i
