"""A DMA engine's busy timeline: transfers take the earliest free slot at or after they are ready.

Each of the 16 DMA engines serves several rings; a transfer blocked on a semaphore holds its ring,
not the engine, so a later transfer that is ready earlier uses the engine in the meantime. The
timeline keeps merged busy intervals, so a continuously busy engine is one interval.
"""
from __future__ import annotations

from bisect import bisect_right

_EPS = 1e-12     # seconds: intervals closer than this are merged


class Timeline:
    __slots__ = ("starts", "ends")

    def __init__(self):
        self.starts: list[float] = []
        self.ends: list[float] = []

    @property
    def free_at(self) -> float:
        """When the last booked transfer ends."""
        return self.ends[-1] if self.ends else 0.0

    def slot(self, ready: float, duration: float) -> tuple[float, int]:
        """(start, position) of the earliest gap of `duration` at or after `ready`."""
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, ready)
        t = ready
        n = len(starts)
        while i < n and starts[i] - t < duration - _EPS:
            if ends[i] > t:
                t = ends[i]
            i += 1
        return t, i

    def book(self, start: float, duration: float, i: int) -> None:
        """Book [start, start + duration) found by slot() at position i (merging neighbours)."""
        starts, ends = self.starts, self.ends
        end = start + duration
        join_prev = i > 0 and ends[i - 1] >= start - _EPS
        join_next = i < len(starts) and starts[i] <= end + _EPS
        if join_prev and join_next:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif join_prev:
            ends[i - 1] = end
        elif join_next:
            starts[i] = start
        else:
            starts.insert(i, start)
            ends.insert(i, end)
