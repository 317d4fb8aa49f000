"""The one definition of MFU, HFU and MBU, used by every report (benchmark, profile, torch).

  MFU = sum over matmuls of FLOPs / peak(input dtypes) / kernel time
  HFU = the same over all Tensor-engine work, transposes included
  MBU = bytes DMA moved to or from HBM / (HBM bandwidth per NeuronCore x kernel time)

FLOPs are each instruction's own count (`Instruction.flops()`, `Instruction.pe_flops()`). The peak of a
dtype follows AWS's profiler, which counts FLOPs BF16-equivalent: BF16/FP16/TF32 1x, FP32 4x, FP8 1x on
Trn1 and 0.5x on Trn2/Trn3 (https://github.com/aws-neuron/aws-neuron-sdk/blob/master/tools/neuron-explorer/
profile-schema-reference.rst). So peak(dtype) = bf16 peak / weight: an fp8 matmul on trn2 is measured
against the double-row FP8 peak (2x bf16) whether or not it uses perf_mode=double_row.
"""
from __future__ import annotations

from dataclasses import dataclass

from trnlab.core import dtypes as dt
from trnlab.isa.base import facts_memo


def flop_weight(chip, dtypes) -> float:
    """BF16-equivalent weight of FLOPs on these input dtypes (AWS profiler weighting, see above)."""
    if dt.float32 in dtypes:
        return 4.0
    if any(d in dt.FP8 for d in dtypes):
        return 0.5 if chip.nc_version >= 3 else 1.0
    return 1.0


def peak_flops(chip, dtypes) -> float:
    """Tensor-engine peak FLOP/s for inputs of these dtypes."""
    return chip.peak_bf16_flops / flop_weight(chip, dtypes)


def pe_seconds(chip, flops: float, dtypes) -> float:
    """Time `flops` take at the peak of their dtypes: the numerator of MFU/HFU."""
    return flops * flop_weight(chip, dtypes) / chip.peak_bf16_flops


_WEIGHTS: dict = {}        # (nc_version, dtypes) -> flop_weight


def ratio(ideal: float, actual: float) -> float:
    """MFU, HFU, MBU: what the work needs at peak over what it took (0 for an empty run)."""
    return ideal / actual if actual > 0 else 0.0


@dataclass(slots=True)
class Work:
    """What a run did, summed per instruction in issue order (the scheduler keeps one)."""
    flops: float = 0.0          # matmul FLOPs (2*M*N*K), transposes excluded
    pe_flops: float = 0.0       # all Tensor-engine FLOPs, transposes included
    mfu_s: float = 0.0          # sum of flops at their dtype's peak
    hfu_s: float = 0.0          # sum of pe_flops at their dtype's peak
    dma_bytes: int = 0
    hbm_bytes: int = 0          # DMA bytes read from or written to HBM

    def add_pe(self, chip, instr, memo=False) -> None:
        """Count one instruction's PE work. memo: its facts memo (isa.base.facts_memo) if the caller has
        it (None: it has none); the work is a function of the chip and the facts, kept there."""
        if memo is False:
            memo = facts_memo(instr, chip)
        work = memo.get("pe_work") if memo is not None else None
        if work is None:
            work = self._pe_work(chip, instr)
            if memo is not None:
                memo["pe_work"] = work
        if work:
            flops, pe, mfu_s, hfu_s = work
            self.flops += flops
            self.pe_flops += pe
            self.mfu_s += mfu_s
            self.hfu_s += hfu_s

    @staticmethod
    def _pe_work(chip, instr) -> tuple:
        """(FLOPs, PE FLOPs, MFU seconds, HFU seconds) of one instruction; () if it does no PE work."""
        pe = instr.pe_flops()
        if not pe:
            return ()
        flops = instr.flops()
        key = (chip.nc_version, instr.flop_dtypes())
        weight = _WEIGHTS.get(key)
        if weight is None:                   # (hot path: one entry per dtype combination)
            weight = _WEIGHTS[key] = flop_weight(chip, key[1])
        return (flops, pe, flops * weight / chip.peak_bf16_flops,      # = pe_seconds(chip, flops, dtypes)
                pe * weight / chip.peak_bf16_flops)

    def add_dma(self, nbytes: int, hbm: bool) -> None:
        self.dma_bytes += nbytes
        if hbm:
            self.hbm_bytes += nbytes


@dataclass(frozen=True, slots=True)
class Utilization:
    mfu: float
    hfu: float
    mbu: float


def utilization(chip, work: Work, latency_s: float) -> Utilization:
    """MFU, HFU and MBU of `work` done in `latency_s` on one NeuronCore of `chip`."""
    return Utilization(mfu=ratio(work.mfu_s, latency_s), hfu=ratio(work.hfu_s, latency_s),
                       mbu=ratio(work.hbm_bytes, chip.hbm_bytes_per_s_per_core * latency_s))
