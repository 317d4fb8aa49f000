"""Online list scheduler: each engine runs its queue in order; memory hazards order instructions.

Minimal first version: per-engine in-order queues, RAW/WAR/WAW on physical regions, ISA cycle costs,
DMA = fixed cost + bytes / queue bandwidth. (Extended by the timing model issue.)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from trnlab.isa.base import Engine


@dataclass(frozen=True, slots=True)
class Event:
    """One scheduled instruction: what profiles and reports consume (times in seconds)."""
    name: str          # opcode, e.g. "nc_matmul"
    track: str         # "tensor" | "vector" | "scalar" | "gpsimd" | "dma.q0" ... "dma.q15"
    start: float
    end: float
    loc: str           # kernel file:line
    api: str           # front-end API, e.g. "nisa.nc_matmul"
    detail: str        # operands: "dst 'x'[128,512] float32 in psum; stationary ..."
    flops: float = 0.0
    nbytes: int = 0


class Scheduler:
    def __init__(self, chip, *, trace: bool = False):
        self.chip = chip
        self.free_at = defaultdict(float)       # engine / dma queue -> time (s) it becomes free
        self.busy = defaultdict(float)
        self.writes = defaultdict(list)         # memory kind -> [(p0, p1, b0, b1, end)]
        self.reads = defaultdict(list)
        self.end = 0.0
        self.next_queue = 0
        self.records = [] if trace else None
        self.hz = {Engine.TENSOR: chip.tensor_hz, Engine.VECTOR: chip.vector_hz,
                   Engine.SCALAR: chip.scalar_hz, Engine.GPSIMD: chip.gpsimd_hz}

    def _ready(self, instr) -> float:
        t = 0.0
        for tensor in instr.reads():
            t = max(t, self._last(self.writes[tensor.buffer], tensor.region()))
        for tensor in instr.writes():
            r = tensor.region()
            t = max(t, self._last(self.writes[tensor.buffer], r), self._last(self.reads[tensor.buffer], r))
        return t

    @staticmethod
    def _last(entries, r) -> float:
        p0, p1, b0, b1 = r
        t = 0.0
        for q0, q1, c0, c1, end in entries:
            if q0 < p1 and p0 < q1 and c0 < b1 and b0 < c1 and end > t:
                t = end
        return t

    def schedule(self, instr) -> tuple[float, float]:
        if instr.engine == Engine.DMA:
            q = instr.queue if getattr(instr, "queue", None) is not None else self.next_queue
            self.next_queue = (q + 1) % self.chip.dma_queues
            unit = ("dma", q)
            duration = self.chip.dma_fixed_s + instr.dma_bytes() / self.chip.dma_queue_bytes_per_s
        else:
            unit = instr.engine
            duration = instr.cycles(self.chip) / self.hz[instr.engine]
        start = max(self.free_at[unit], self._ready(instr))
        end = start + duration
        self.free_at[unit] = end
        self.busy[unit] += duration
        for tensor in instr.reads():
            self.reads[tensor.buffer].append(tensor.region() + (end,))
        for tensor in instr.writes():
            self.writes[tensor.buffer].append(tensor.region() + (end,))
        self.end = max(self.end, end)
        if self.records is not None:
            track = f"dma.q{unit[1]}" if isinstance(unit, tuple) else str(unit)
            detail = "; ".join(t.describe() for t in instr.writes() + instr.reads())
            self.records.append(Event(instr.opcode, track, start, end, instr.loc, instr.api, detail,
                                      instr.flops(), instr.dma_bytes()))
        return start, end
