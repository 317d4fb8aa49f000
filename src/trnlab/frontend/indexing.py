"""Index helpers shared by both NKI front ends."""
from __future__ import annotations


class DynSlice:
    """nl.ds(start, size[, step]): a slice of `size` elements from `start`."""

    __slots__ = ("start", "size", "step")

    def __init__(self, start, size, step=1):
        self.start, self.size, self.step = int(start), int(size), int(step)

    def as_slice(self) -> slice:
        return slice(self.start, self.start + self.size * self.step, self.step)

    def __repr__(self) -> str:
        return f"ds({self.start}, {self.size})"
