"""Online list scheduler: the clock of the simulated NeuronCore.

Machine.issue hands every instruction here in program order. Each compute engine (Tensor, Vector,
Scalar, GpSimd) runs its own in-order queue; a DMA instruction is spread over the 16 DMA queues;
engines and queues run concurrently. An instruction starts when its unit is free and its memory
hazards (RAW/WAR/WAW on exact regions, see hazards.py) are resolved. Costs come from the instruction
(instr.cost(chip), trnlab.isa.base); the kind of cost decides how it is scheduled:
  - EngineCost: cycles at the engine clock (ISA formulas); a consumer sees the result
    static_access_cycles later (ARCH: ~60-cycle access start, hidden between independent work);
  - MatmulCost: LoadStationary runs in the background of the previous matmul (up to 4x faster than an
    MM), MultiplyMoving costs the ISA formula; trn2/trn3 PE power throttle after idle time;
  - DmaCost: fixed ~1.3 us start latency (~0.6 us with the hardware DGE; hidden behind a queue's backlog) + bytes / (queue bandwidth x
    efficiency(descriptor size)), queues sharing the NeuronCore's HBM bandwidth.
See docs/calibration.md for the constants and the fit against measured kernels.
"""
from __future__ import annotations

import weakref
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, replace

from trnlab.core import dtypes as dt
from trnlab.isa import base as _base
from trnlab.isa.base import DmaCost, Engine, MatmulCost, compiler_placed, fast_init
from trnlab.isa import costs
from trnlab.isa.cc import CC_UNIT, CcCost
from trnlab.timing.hazards import HazardTracker
from trnlab.timing.metrics import Work
from trnlab.timing.timeline import _EPS, Timeline

_DMA = "dma"
_TENSOR = Engine.TENSOR


@dataclass(frozen=True, slots=True)
class Operand:
    """One tensor operand of a scheduled instruction."""
    name: str
    shape: tuple
    dtype: str         # e.g. "bfloat16"
    buffer: str        # "hbm" | "sbuf" | "psum"

    @classmethod
    def of(cls, t) -> "Operand":
        return cls(t.name, tuple(t.shape), dt.name_of(t.dtype), t.buffer)

    def describe(self) -> str:
        return f"'{self.name}'[{','.join(map(str, self.shape))}] {self.dtype} in {self.buffer}"


@dataclass(frozen=True, slots=True)
class Event:
    """One scheduled instruction (a DMA: one per queue it used): what profiles and reports consume
    (times in seconds)."""
    name: str          # opcode, e.g. "nc_matmul"
    track: str         # "tensor" | "vector" | "scalar" | "gpsimd" | "dma.q0" ... "dma.q15"
    start: float
    end: float
    loc: str           # kernel file:line
    api: str           # front-end API, e.g. "nisa.nc_matmul"
    operands: tuple = ()   # Operand: the writes, then the reads
    flops: float = 0.0     # matmul FLOPs (Instruction.flops)
    nbytes: int = 0        # bytes this queue moved (DMA)
    index: int = -1        # instruction number in program order (a DMA's queue pieces share it)

    @property
    def detail(self) -> str:
        """The operands as text: "'x'[128,512] float32 in psum; ..."."""
        return "; ".join(o.describe() for o in self.operands)


fast_init(Operand, Event, positional=True)      # a traced run builds one of each per event


class Scheduler:
    """Schedules instructions online. `records` (trace=True) lists Events; `end` is the predicted
    latency in seconds (`compute_end`: the end of the latest instruction other than a collective); `busy`
    maps each unit (Engine or ("dma", q)) to its busy seconds."""

    def __init__(self, chip, *, trace: bool = False):
        self.chip = chip
        self.free_at = defaultdict(float)       # unit -> time (s) it becomes free
        self.busy = defaultdict(float)
        self.end = 0.0
        self.compute_end = 0.0
        self.count = 0
        self.next_queue = 0
        self.records = [] if trace else None
        self._operands: tuple = (-1, None, ())   # (index, weak instruction, Operands) of the latest event
        self.hazards = HazardTracker()
        self.hz = {Engine.TENSOR: chip.tensor_hz, Engine.VECTOR: chip.vector_hz,
                   Engine.SCALAR: chip.scalar_hz, Engine.GPSIMD: chip.gpsimd_hz}
        self.pe_hz = chip.tensor_hz
        self.latency = {e: chip.static_access_cycles / hz for e, hz in self.hz.items()}
        self.latency[_DMA] = 0.0
        self.queues = [("dma", q) for q in range(chip.dma_queues)]
        self.lines = {u: Timeline() for u in self.queues}
        self._qlines = [self.lines[u] for u in self.queues]      # by queue number (hot: no tuple keys)
        self.last_on = {}                       # unit -> index of its latest instruction
        # Tensor engine state: background LoadStationary and power throttle
        self.ls_free = 0.0
        self.mm_start = 0.0
        self.pe_last_end = 0.0
        self.throttle = costs.Throttle(chip)
        self.work = Work()                      # FLOPs and bytes for MFU/HFU/MBU (timing.metrics)
        # per-instruction (end, predecessor index, opcode, api, loc) for the critical path
        self.ends: list[float] = []
        self.preds: list[int] = []
        self.sites: list[tuple] = []
        self.floor = 0.0                        # no later instruction starts before this (wait_until)
        # CompilerModel.engine_balance: the Machine sets it from its own model; `placed`: the engine
        # the latest compute instruction ran on
        self.balance = True
        self.placed = None

    # --- synchronisation with other cores (trnlab.frontend.lnc) ----------------------------------
    def now(self) -> float:
        """When everything issued so far has finished: this core's arrival time at a barrier."""
        return max(self.end, self.floor)

    def wait_until(self, t: float) -> None:
        """Instructions issued from now on start no earlier than t (seconds): a core waiting at
        nisa.core_barrier / nisa.sendrecv for its partner."""
        self.floor = max(self.floor, float(t))

    # --- hazards ---------------------------------------------------------------------------------
    def _ready(self, accesses, skip) -> tuple[float, int]:
        return self.hazards.ready(accesses, skip, (self.floor, -1))

    # --- scheduling ------------------------------------------------------------------------------
    def schedule(self, instr) -> tuple[float, float]:
        index = self.count
        self.count = index + 1
        chip = self.chip
        accesses = self.hazards.accesses(instr)
        # the memo of the instruction's validated facts (isa.base.same_facts): a memoised cost is read
        # from it directly, and the PE work (metrics.Work.add_pe) is kept there (facts_memo, inline)
        last = _base._last
        memo = last[2] if last[0]() is instr and chip is last[1] else None
        cost = memo.get("cost") if memo is not None else None
        if cost is None:
            cost = instr.cost(chip)
        kind = type(cost)
        if kind is MatmulCost:
            return self._schedule_matmul(instr, cost, memo, accesses, index)
        if kind is DmaCost:
            start, end, pred = self._dma(instr, cost, accesses, index)
            unit_tag, avail = _DMA, end
            self.placed = instr.engine
            self.work.add_dma(cost.nbytes, cost.hbm)
        elif kind is CcCost:
            start, end, pred = self._collective(instr, cost, accesses, index)
            unit_tag, avail = CC_UNIT, end
            self.placed = instr.engine
        else:
            engine = instr.engine
            if engine == _TENSOR:
                self._add_pe(instr, memo)
            choices = instr.engine_choices(chip) if self.balance and compiler_placed(instr) else ()
            if len(choices) > 1:
                engine, (start, end, pred) = self._place(instr, cost.cycles, choices, accesses)
            else:
                start, end, pred = self._compute(engine, cost.cycles, accesses)
            self.free_at[engine] = end
            self.busy[engine] += end - start
            self.last_on[engine] = index
            unit_tag, avail = engine, end + self.latency[engine]
            self.placed = engine
            if self.records is not None:
                self._event(instr, str(engine), start, end, instr.flops(), instr.dma_bytes(), index)
        self.hazards.record_all(accesses, avail, unit_tag, index)
        if end > self.end:
            self.end = end
        if unit_tag is not CC_UNIT and end > self.compute_end:
            self.compute_end = end
        self.ends.append(avail)
        self.preds.append(pred)
        self.sites.append((instr.opcode, instr.api, instr.loc))
        return start, end

    def _schedule_matmul(self, instr, cost, memo, accesses, index) -> tuple[float, float]:
        """schedule() of a matmul (most instructions of a GEMM), written out: LoadStationary (LS) then
        MultiplyMoving (MM). LS of this matmul overlaps the previous MM (background LS, ARCH v2), so
        back-to-back matmuls cost max(LS, MM) each."""
        engine = instr.engine
        if engine == _TENSOR:
            self._add_pe(instr, memo)
        hz = self.pe_hz
        # reads() = (stationary, moving), then dst: the stationary gates LS, the rest gate MM, each
        # HazardTracker.ready(..., _TENSOR, best) from the same floor, inline; the stationary is a read,
        # and in the common case one bucket of a space without wide entries (HazardTracker.ready's inline case)
        best = (self.floor, -1)
        sp, p0, p1, b0, b1, _, is_write, writes, _, _ = accesses[0]
        if writes is not None and not is_write and not sp.wide:
            stat_ready, stat_prod = best
            for e in writes:
                if e[4] > stat_ready and e[0] < p1 and p0 < e[1] and e[2] < b1 and b0 < e[3]:
                    stat_ready, stat_prod = e[4], e[6]
        else:
            stat_ready, stat_prod = self.hazards.ready(accesses[:1], _TENSOR, best)
        ready, producer = best                    # the rest: HazardTracker.ready's inline case, inline
        for acc in accesses[1:]:
            sp, p0, p1, b0, b1, _, is_write, writes, reads, _ = acc
            if writes is None or sp.wide:
                ready, producer = self.hazards.ready((acc,), _TENSOR, (ready, producer))
                continue
            for e in writes:
                if e[4] > ready and e[0] < p1 and p0 < e[1] and e[2] < b1 and b0 < e[3] and (
                        not is_write or e[5] is not _TENSOR):
                    ready, producer = e[4], e[6]
            if is_write:
                for e in reads:
                    if e[4] > ready and e[0] < p1 and p0 < e[1] and e[2] < b1 and b0 < e[3] and e[5] is not _TENSOR:
                        ready, producer = e[4], e[6]
        ls_start = self.ls_free
        if self.mm_start > ls_start:
            ls_start = self.mm_start
        if stat_ready > ls_start:
            ls_start = stat_ready
        ls_end = ls_start + cost.ls_cycles / hz
        free = self.free_at[_TENSOR]
        start = free                              # max(free, ls_end, ready), the first of equals
        if ls_end > start:
            start = ls_end
        if ready > start:
            start = ready
        if start == free:
            pred = self.last_on.get(_TENSOR, -1)
        elif start == ready:
            pred = producer
        else:
            pred = stat_prod if ls_start == stat_ready and stat_ready > 0 else self.last_on.get(_TENSOR, -1)
        end = start + cost.cycles / hz
        throttle = self.throttle           # _pe_throttled, inline
        if throttle.on:
            end = start + (end - start) / throttle.speed(start, self.pe_last_end)
        else:
            end = start + (end - start)            # (speed 1.0: x / 1.0 is x exactly)
        self.pe_last_end = end
        self.ls_free = ls_end
        self.mm_start = start
        self.free_at[engine] = end
        self.busy[engine] += end - start
        self.last_on[engine] = index
        avail = end + self.latency[engine]
        self.placed = engine
        if self.records is not None:
            self._event(instr, str(engine), start, end, instr.flops(), instr.dma_bytes(), index)
        self.hazards.record_all(accesses, avail, engine, index)
        if end > self.end:
            self.end = end
        if end > self.compute_end:
            self.compute_end = end
        self.ends.append(avail)
        self.preds.append(pred)
        self.sites.append((instr.opcode, instr.api, instr.loc))
        return start, end

    def _add_pe(self, instr, memo) -> None:
        """Work.add_pe, reading a memoised work from the facts memo when there is one."""
        work = memo.get("pe_work") if memo is not None else None
        if work is None:
            self.work.add_pe(self.chip, instr, memo)
        elif work:
            w = self.work
            w.flops += work[0]
            w.pe_flops += work[1]
            w.mfu_s += work[2]
            w.hfu_s += work[3]

    def _compute(self, engine, cycles, accesses):
        free = self.free_at[engine]
        ready, producer = self._ready(accesses, engine)
        start = max(free, ready)
        pred = producer if ready > free else self.last_on.get(engine, -1)
        end = start + cycles / self.hz[engine]
        if engine == _TENSOR:
            end = self._pe_throttled(start, end)
        return start, end, pred

    def _place(self, instr, issued_cycles, choices, accesses):
        """engine_balance: run a compiler-placed op on the eligible engine where it finishes first, each
        engine charged the ISA cost formula at its own clock; ties go to the earlier engine of
        `choices` (Vector first). Only engines whose numerics equal the issued engine's are offered
        (Instruction.engine_choices), so the values never depend on this choice."""
        best = None
        for engine in choices:
            cycles = (issued_cycles if engine == instr.engine     # (the caller's cost of the issued engine)
                      else replace(instr, engine=engine).cost(self.chip).cycles)
            timing = self._compute(engine, cycles, accesses)
            if best is None or timing[1] < best[1][1]:
                best = (engine, timing)
        return best

    def _pe_throttled(self, start: float, end: float) -> float:
        speed = self.throttle.speed(start, self.pe_last_end)
        end = start + (end - start) / speed
        self.pe_last_end = end
        return end

    def _dma(self, instr, cost, accesses, index):
        """Spread the transfer over the queues (ARCH v2: 16 transfers x 8 partitions); each piece
        takes its queue's earliest free slot after the fixed start latency."""
        chip = self.chip
        ready, producer = self._ready(accesses, None)
        nbytes, rate, npieces = cost.nbytes, cost.rate, cost.pieces
        begin = ready + cost.fixed                # descriptors + semaphore, hidden behind a backlog
        if cost.queue is not None:
            candidates = (int(cost.queue) % chip.dma_queues,)
        else:
            candidates = range(len(self.queues))
        shares = [nbytes // npieces] * npieces
        shares[0] += nbytes - sum(shares)
        duration = shares[0] / rate
        lines = self._qlines
        slots = []
        room = duration - _EPS                    # (Timeline.slot's gap test)
        for q in candidates:                      # earliest start first, ties to the lower queue
            line = lines[q]
            ends = line.ends
            if not ends or ends[-1] <= begin:     # idle by then: Timeline.slot's answer, without the call
                slots.append((begin, q, len(ends), -1))
                continue
            starts = line.starts                  # Timeline.slot(begin, duration), inline
            i = bisect_right(ends, begin)
            s, blocker, n = begin, -1, len(starts)
            while i < n and starts[i] - s < room:
                if ends[i] > s:
                    s, blocker = ends[i], line.owners[i]
                i += 1
            slots.append((s, q, i, blocker))
        slots.sort()                              # (start, queue) is unique: never compares further
        start, end, pred = slots[0][0], 0.0, producer     # (the earliest piece starts first)
        queues, busy, free_at, last_on, records = self.queues, self.busy, self.free_at, self.last_on, self.records
        for (s, q, pos, blocker), share in zip(slots[:npieces], shares):
            unit, line = queues[q], lines[q]
            d = share / rate
            e = s + d
            line.book(s, d, pos, index)
            busy[unit] += d
            free_at[unit] = line.ends[-1]         # (Timeline.free_at: it has just booked)
            if e >= end:
                end = e
                pred = producer if s <= begin + 1e-12 or blocker < 0 else blocker
            last_on[unit] = index
            if records is not None:
                self._event(instr, f"dma.q{q}", s, e, 0.0, share, index)
        return start, end, pred

    # --- collectives (trnlab.isa.cc) ---------------------------------------------------------------
    def ready_at(self, instr) -> float:
        """When instr could start on this core: its operands ready, the collective unit free, no earlier
        than a wait (a rank's arrival time at a collective, trnlab.core.ranks)."""
        return max(self.operands_ready(instr), self.free_at[CC_UNIT])

    def operands_ready(self, instr) -> float:
        """When instr's operands are ready (its producers done, no earlier than a wait)."""
        return self._ready(self.hazards.accesses(instr), None)[0]

    def collective_end(self, instr) -> float:
        """When instr (a collective) would end on this core if issued now (nothing is booked): what a rank
        tells its peers so that every participant completes with the slowest (trnlab.core.ranks)."""
        return self._collective_plan(instr.cost(self.chip), self.hazards.accesses(instr))[1]

    def _collective_plan(self, cost, accesses):
        """(start, end, predecessor, [(queue, start)]): the collective unit runs one collective at a time for
        cost.seconds from the last participant's arrival; the bytes this rank moves take an equal share of
        every DMA queue from its start (kernel DMAs queue behind or beside them); a share delayed by kernel
        DMAs, or a slower participant (cost.min_end), makes it end later."""
        ready, producer = self._ready(accesses, None)
        start = max(ready, self.free_at[CC_UNIT], cost.not_before)
        pred = producer if start == ready else self.last_on.get(CC_UNIT, -1)
        end = max(start + cost.seconds, cost.min_end)
        pieces = []
        if cost.queue_bytes:
            share = cost.queue_bytes / len(self.queues) / cost.rate
            for unit in self.queues:
                s, pos, _ = self.lines[unit].slot(start, share)
                pieces.append((unit, s, pos))
                end = max(end, s + share)
        return start, end, pred, pieces

    def _collective(self, instr, cost, accesses, index):
        start, end, pred, pieces = self._collective_plan(cost, accesses)
        if pieces:
            share = cost.queue_bytes / len(self.queues) / cost.rate
            for unit, s, pos in pieces:
                line = self.lines[unit]
                line.book(s, share, pos, index)
                self.busy[unit] += share
                self.free_at[unit] = line.free_at
                if self.records is not None:
                    self._event(instr, f"dma.q{unit[1]}", s, s + share, 0.0,
                                int(cost.queue_bytes / len(self.queues)), index)
        self.free_at[CC_UNIT] = end
        self.busy[CC_UNIT] += end - start
        self.last_on[CC_UNIT] = index
        if self.records is not None:
            self._event(instr, CC_UNIT, start, end, 0.0, 0, index)
        return start, end, pred

    def _event(self, instr, track, start, end, flops, nbytes, index) -> None:
        # a DMA or collective records one event per queue it used: their operands are made once
        cached = self._operands
        if cached[0] == index and cached[1]() is instr:
            operands = cached[2]
        else:
            operands = tuple(Operand.of(t) for t in (*instr.writes(), *instr.reads()) if t is not None)
            self._operands = (index, weakref.ref(instr), operands)
        self.records.append(Event(instr.opcode, track, start, end, instr.loc, instr.api, operands,
                                  flops, nbytes, index))

    # --- analysis --------------------------------------------------------------------------------
    def critical_path(self) -> list[tuple[int, float]]:
        """(instruction index, seconds it added) along the chain that decides the end time, last first."""
        return list(zip(*self.critical_steps()))

    def critical_steps(self) -> tuple[list[int], list[float]]:
        """critical_path() as two lists, the indices and the seconds each added: no object per step
        (the path of a GEMM is as long as its instruction stream)."""
        ends, preds = self.ends, self.preds
        if not ends:
            return [], []
        i = ends.index(max(ends))     # (the first latest end)
        indices, added = [], []
        put_index, put_added = indices.append, added.append
        now = ends[i]                 # walking back in time: each step adds what its predecessor left
        seen = set()
        add = seen.add
        while i >= 0 and i not in seen:      # a backfilled DMA can precede a lower index: guard cycles
            add(i)
            p = preds[i]
            if p >= 0:
                before = ends[p]
                if not before < now:         # min(now, ends[p]): now unless ends[p] is smaller
                    before = now
            else:
                before = 0.0
            put_index(i)
            put_added(now - before)
            now = before
            i = p
        return indices, added
