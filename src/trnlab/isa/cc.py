"""A collective as an ISA instruction on one rank (nki.collectives inside a kernel).

CollectiveInstruction is what a rank issues once every rank of its rank-list has reached the call
(trnlab.core.ranks is the rendezvous): it carries every participant's source values, so executing it on
one rank computes that rank's outputs with the executable spec of trnlab.isa.collectives, and nothing
outside the ISA layer computes. Its timing: the cost model of trnlab.isa.collectives (collective_cost: the
algorithm AWS's runtime picks, for the rank-list's size on the launch's system) on the rank's collective
unit ("cc": the CC core that drives the DMA rings, trainium-scale.md §1.3), starting no earlier than the
slowest participant's arrival (`not_before`), while the bytes this rank moves occupy its DMA queues
(`queue_bytes`), so DMA-heavy compute on the same core contends with it (timing.scheduler).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.tensor import HBM, SBUF
from trnlab.errors import BufferKindError, CollectiveError, ShapeError
from trnlab.isa import collectives as cc
from trnlab.isa.base import Engine, Instruction

CC_UNIT = "cc"


class CcCost(NamedTuple):
    """A collective on the rank's collective unit: `seconds` (collective_cost's latency) from `not_before`
    (the last participant's arrival) on, ending no earlier than `min_end` (the slowest participant's end);
    `queue_bytes` of it moved by this rank's DMA queues at `rate`."""
    seconds: float
    not_before: float
    queue_bytes: int
    rate: float
    min_end: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectiveInstruction(Instruction):
    """dsts[i] of this rank = collective(inputs[i])[position]: inputs[i] holds the source values of every rank
    of the rank-list, in rank-list order (position is this rank's place in it). `writes_dst` False: a
    permute leaves the dst of a rank that is no pair's target unwritten."""
    opcode: ClassVar[str] = "collective"
    engine: Engine = Engine.DMA          # it runs on the DMA rings (counted with the DMA instructions)
    collective: cc.Collective
    srcs: tuple
    dsts: tuple
    inputs: tuple = ()                   # per (src, dst) pair: a tuple of per-rank numpy arrays
    position: int = 0
    ranks: int = 1                       # the rank-list's size
    writes_dst: bool = True
    seconds: float = 0.0                 # the cost model's latency of the whole call (all pairs)
    not_before: float = 0.0
    min_end: float = 0.0
    queue_bytes: int = 0

    def reads(self):
        return self.srcs

    def writes(self):
        return self.dsts if self.writes_dst else ()

    def validate(self, chip):
        kinds = {t.buffer for t in (*self.srcs, *self.dsts)}
        if not kinds <= {HBM, SBUF}:
            self.fail(BufferKindError, f"collective tensors must be in HBM or SBUF, got {sorted(kinds)}")
        if len(kinds) > 1:
            self.fail(BufferKindError, "srcs and dsts must all be in HBM or all in SBUF, not a mix of the two")
        if len(self.srcs) != len(self.dsts) or not self.srcs:
            self.fail(CollectiveError, f"srcs and dsts must be non-empty lists of equal length, got "
                                       f"{len(self.srcs)} srcs and {len(self.dsts)} dsts")
        if len(self.srcs) > 1 and SBUF in kinds:
            self.fail(BufferKindError, "coalesced collectives (several tensors) need HBM tensors, not SBUF")
        for src, dst in zip(self.srcs, self.dsts):
            if self.collective.name == "all-to-allv":     # flat element buffers: any shapes, one dtype
                if dt.name_of(src.dtype) != dt.name_of(dst.dtype):
                    self.fail(CollectiveError, f"all-to-allv src {src.describe()} and dst {dst.describe()} "
                                               "must have the same dtype")
                continue
            want = self.dst_shape(tuple(src.shape))
            if tuple(dst.shape) != want:
                self.fail(ShapeError, f"{self.collective.name} over {self.ranks} ranks of src {src.describe()} "
                                      f"gives {list(want)}, but dst is {dst.describe()}")

    def dst_shape(self, shape: tuple) -> tuple:
        """The shape of a rank's result for a source of `shape` (the collective's axis split or concatenated)."""
        axis = getattr(self.collective, "axis", 0)
        name, n = self.collective.name, self.ranks
        if name not in ("all-gather", "reduce-scatter", "all-to-all"):
            return shape
        if not -len(shape) <= axis < len(shape):
            self.fail(ShapeError, f"collective_dim {axis} is out of range for a source of rank {len(shape)}")
        axis %= len(shape)
        if name == "all-gather":
            return shape[:axis] + (shape[axis] * n,) + shape[axis + 1:]
        if shape[axis] % n:
            self.fail(ShapeError, f"{name}: dimension {axis} of the source ({shape[axis]}) must divide "
                                  f"into {n} equal parts (one per rank)")
        return shape if name == "all-to-all" else shape[:axis] + (shape[axis] // n,) + shape[axis + 1:]

    def execute(self, m):
        if not self.writes_dst:
            return
        if self.collective.name == "all-to-allv" and self.collective.send_counts:
            return self._execute_v()
        for dst, inputs in zip(self.dsts, self.inputs):
            try:
                out = self.collective.execute(inputs)[self.position]
            except CollectiveError as exc:
                raise CollectiveError(f"{self.api}: {exc}. At {self.loc}") from None
            if out.size != dst.size:
                self.fail(ShapeError, f"the {self.collective.name} result has shape {list(out.shape)} "
                                      f"({out.size} elements) but dst is {dst.describe()}")
            values = out if out.dtype == dt.storage(dst.dtype) else dt.to_fp32(out)
            self.store(dst, np.reshape(values, dst.shape))

    def _execute_v(self):
        """All-to-allv: each received part written at its offset of the flat dst; the rest of dst unwritten."""
        for dst, inputs in zip(self.dsts, self.inputs):
            try:
                parts = self.collective.received(inputs, self.position)
            except CollectiveError as exc:
                raise CollectiveError(f"{self.api}: {exc}. At {self.loc}") from None
            flat = np.zeros(dst.size, dtype=dt.storage(dst.dtype))
            mask = np.zeros(dst.size, dtype=bool)
            for src, (at, values) in enumerate(parts):
                if at + values.size > dst.size:
                    self.fail(CollectiveError, f"all-to-allv: the {values.size} elements from rank-list position "
                                               f"{src} at receive offset {at} overrun dst {dst.describe()} "
                                               f"({dst.size} elements)")
                flat[at:at + values.size] = values
                mask[at:at + values.size] = True
            dst.write(flat.reshape(dst.shape), where=mask.reshape(dst.shape), api=self.api, loc=self.loc)

    def sources(self) -> tuple:
        """This rank's source values at the call (copies: the rank may overwrite them once it returns)."""
        return tuple(np.array(self.raw(t)) for t in self.srcs)

    def cost(self, chip):
        return CcCost(self.seconds, self.not_before, self.queue_bytes, chip.dma_queue_bytes_per_s, self.min_end)

    def dma_bytes(self) -> int:
        return self.queue_bytes


def queue_bytes(op: str, nbytes: int, ranks: int) -> int:
    """Bytes one rank's DMA queues move for a collective of nccom-test size `nbytes`: nccl-tests' bus traffic
    per rank (busbw = that / time: 2(n-1)/n of the buffer for an all-reduce, (n-1)/n for all-gather,
    reduce-scatter and all-to-all, the whole buffer for a permute)."""
    if ranks < 2:
        return int(nbytes)
    return int(round(cc.busbw_factor(op, ranks) * nbytes))


__all__ = ["CC_UNIT", "CcCost", "CollectiveInstruction", "queue_bytes"]
