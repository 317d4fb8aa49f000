"""A DMA engine's busy timeline: transfers take the earliest free slot at or after they are ready.

Each of the 16 DMA engines serves several rings; a transfer blocked on a semaphore holds its ring,
not the engine, so a later transfer that is ready earlier uses the engine in the meantime. The
timeline keeps merged busy intervals, so a continuously busy engine is one interval.
"""
from __future__ import annotations

from bisect import bisect_right

_EPS = 1e-12     # seconds: intervals closer than this are merged


class Timeline:
    __slots__ = ("starts", "ends", "owners")

    def __init__(self):
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.owners: list[int] = []      # instruction whose transfer ends each interval

    @property
    def free_at(self) -> float:
        """When the last booked transfer ends."""
        return self.ends[-1] if self.ends else 0.0

    def slot(self, ready: float, duration: float) -> tuple[float, int, int]:
        """(start, position, blocker) of the earliest gap of `duration` at or after `ready`;
        blocker = the instruction whose transfer ends where this one starts (-1: none)."""
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, ready)
        t, who = ready, -1
        n = len(starts)
        while i < n and starts[i] - t < duration - _EPS:
            if ends[i] > t:
                t, who = ends[i], self.owners[i]
            i += 1
        return t, i, who

    def book(self, start: float, duration: float, i: int, owner: int) -> None:
        """Book [start, start + duration) found by slot() at position i (merging neighbours)."""
        starts, ends, owners = self.starts, self.ends, self.owners
        end = start + duration
        join_prev = i > 0 and ends[i - 1] >= start - _EPS
        join_next = i < len(starts) and starts[i] <= end + _EPS
        if join_prev and join_next:
            ends[i - 1], owners[i - 1] = ends[i], owners[i]
            del starts[i], ends[i], owners[i]
        elif join_prev:
            ends[i - 1], owners[i - 1] = end, owner
        elif join_next:
            starts[i] = start
        else:
            starts.insert(i, start)
            ends.insert(i, end)
            owners.insert(i, owner)
