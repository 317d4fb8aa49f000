"""The DMA model (reached through DmaInstruction.cost in the ISA: transfer shape, efficiency, queue
spreading) and the Tensor-engine power throttle. Constants come from the chip preset (trnlab.hw)."""
from __future__ import annotations

import math


def contiguous_bytes(t) -> int:
    """Bytes of the innermost contiguous run of a view (one DMA descriptor). On-chip views stop at
    the partition dim: each partition is a separate descriptor."""
    a = t.array
    run = a.itemsize
    stop = 0 if t.storage.kind != "hbm" else -1
    for d in range(a.ndim - 1, stop, -1):
        n = a.shape[d]
        if n == 1:
            continue
        if a.strides[d] != run:
            break
        run *= n
    return run


def chunk_bytes(instr) -> int:
    """Per-descriptor bytes of a DMA: the shorter contiguous run of its source and destination."""
    tensors = [t for t in (*instr.reads(), *instr.writes()) if t is not None]
    index = getattr(instr, "index", None)
    runs = [contiguous_bytes(t) for t in tensors if t is not index]
    return max(1, min(runs)) if runs else 1


def touches_hbm(instr) -> bool:
    return any(t.storage.kind == "hbm" for t in (*instr.reads(), *instr.writes()))


def dma_efficiency(chip, chunk: int) -> float:
    """Fraction of a queue's bandwidth sustained with `chunk`-byte descriptors: the fitted sustained
    fraction x chunk / (chunk + per-descriptor overhead). DMAG: <256 B badly overhead-bound,
    256 B-2 KiB improving, >=4 KiB saturates."""
    return chip.dma_efficiency * chunk / (chunk + chip.dma_chunk_overhead_bytes)


def dma_pieces(chip, nbytes: int, chunk: int) -> int:
    """How many queues one DMA instruction is spread over: the compiler splits a transfer into
    groups of dma_partitions_per_transfer descriptors, one group per queue (ARCH v2: a 128-partition
    load = 16 transfers x 8 partitions)."""
    descriptors = max(1, math.ceil(nbytes / max(1, chunk)))
    return max(1, min(chip.dma_queues, math.ceil(descriptors / chip.dma_partitions_per_transfer)))


def dma_start_s(chip, instr) -> float:
    """Fixed start latency of a DMA: the hardware DGE's when the kernel asked for it (dge_mode=hwdge, which
    the ISA only accepts from NC-v3 on), else the software descriptor + semaphore path's."""
    if getattr(instr, "raw_bytes", False) and chip.hwdge_fixed_s is not None:
        return chip.hwdge_fixed_s
    return chip.dma_fixed_s


def dma_queue_rate(chip, chunk: int, hbm: bool) -> float:
    """Bytes/s one queue moves for a DMA of `chunk`-byte descriptors. Queues share the NeuronCore's
    HBM bandwidth."""
    rate = chip.dma_queue_bytes_per_s * dma_efficiency(chip, chunk)
    if hbm:
        rate = min(rate, chip.hbm_bytes_per_s_per_core / chip.dma_queues)
    return rate


class Throttle:
    """Tensor-engine dI/dt power throttle (trn2/trn3; RTD neuron-explorer glossary): after the PE
    has been mostly idle (utilisation < 50% over a ~3 us window) it restarts at ~50% speed and ramps
    linearly to full speed over ~3 us of work."""

    __slots__ = ("on", "floor", "ramp", "gap", "warm_since")

    def __init__(self, chip):
        self.on = bool(chip.pe_throttle)
        self.floor = chip.pe_throttle_floor
        self.ramp = chip.pe_throttle_ramp_s
        # idle for more than half the window -> utilisation over the window < 50%
        self.gap = chip.pe_throttle_window_s * 0.5
        self.warm_since = None       # cold until the first Tensor-engine instruction

    def speed(self, start: float, last_end: float) -> float:
        if not self.on:
            return 1.0
        if self.warm_since is None or start - last_end >= self.gap:
            self.warm_since = start
        warm = (start - self.warm_since) / self.ramp
        return 1.0 if warm >= 1.0 else self.floor + (1.0 - self.floor) * warm
