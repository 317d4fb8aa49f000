"""trnlab.benchmark(kernel, target=..., numerics=True)(*args) -> BenchmarkResult.

Runs a kernel (an @nki.jit Kernel or a plain function written against the NKI front end) on the
simulated NeuronCore and reports the timing model's view: latency, engine utilisation, DMA traffic,
FLOPs, MFU/HFU/MBU and the critical path with kernel source lines. numerics=False skips the
arithmetic (timing-only); both modes give the same times.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from trnlab.core import dtypes as dt
from trnlab.isa.base import Engine

ENGINES = ("tensor", "vector", "scalar", "gpsimd")


@dataclass
class PathEntry:
    """Time one kernel source line contributed to the critical path."""
    opcode: str
    api: str
    loc: str
    seconds: float
    count: int
    share: float

    def as_dict(self) -> dict:
        return {"opcode": self.opcode, "api": self.api, "loc": self.loc, "seconds": self.seconds,
                "count": self.count, "share": self.share}


@dataclass
class BenchmarkResult:
    name: str
    target: str
    latency_s: float
    busy: dict                 # engine -> busy fraction of the latency; "dma" = mean over the 16 queues
    dma_bytes: int
    hbm_bytes: int
    flops: float               # matmul FLOPs (2*M*N*K)
    mfu: float                 # matmul FLOPs at their dtype's peak rate / latency
    hfu: float                 # as MFU, also counting Tensor-engine transposes
    mbu: float                 # HBM bytes / (HBM bandwidth per NeuronCore x latency)
    critical_path: list = field(default_factory=list)    # PathEntry, largest first
    outputs: Any = None
    instructions: int = 0
    machine: Any = None

    @property
    def latency_us(self) -> float:
        return self.latency_s * 1e6

    @property
    def latency_ms(self) -> float:
        return self.latency_s * 1e3

    @property
    def dma_bandwidth(self) -> float:
        """Achieved DMA bytes/s over the whole kernel."""
        return self.dma_bytes / self.latency_s if self.latency_s > 0 else 0.0

    @property
    def achieved_flops(self) -> float:
        return self.flops / self.latency_s if self.latency_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {"name": self.name, "target": self.target, "latency_us": self.latency_us, "busy": dict(self.busy),
                "dma_bytes": self.dma_bytes, "hbm_bytes": self.hbm_bytes, "dma_bandwidth": self.dma_bandwidth,
                "flops": self.flops, "achieved_flops": self.achieved_flops, "mfu": self.mfu, "hfu": self.hfu,
                "mbu": self.mbu, "instructions": self.instructions,
                "critical_path": [p.as_dict() for p in self.critical_path]}

    def table(self):
        """A rich renderable summary."""
        from rich.table import Table

        from trnlab.console import fmt_bytes
        t = Table(title=f"{self.name} on {self.target}: {self.latency_us:,.1f} us predicted", show_header=False)
        t.add_column("metric")
        t.add_column("value")
        t.add_row("busy", "  ".join(f"{k} {v:.0%}" for k, v in self.busy.items()))
        t.add_row("DMA", f"{fmt_bytes(self.dma_bytes)} at {self.dma_bandwidth / 1e9:,.1f} GB/s (MBU {self.mbu:.1%})")
        t.add_row("FLOPs", f"{self.flops / 1e9:,.2f} GFLOP at {self.achieved_flops / 1e12:,.2f} TFLOP/s")
        t.add_row("MFU / HFU", f"{self.mfu:.1%} / {self.hfu:.1%}")
        for p in self.critical_path[:5]:
            t.add_row(f"critical {p.share:.0%}", f"{p.api} x{p.count} at {_short(p.loc)}")
        return t

    def __str__(self) -> str:
        from io import StringIO
        from rich.console import Console
        buf = StringIO()
        Console(file=buf, width=120).print(self.table())
        return buf.getvalue().rstrip()


def _short(loc: str) -> str:
    from trnlab.core.srcloc import short
    return short(loc)


def _critical(sched, latency: float, top: int) -> list[PathEntry]:
    seconds, counts = defaultdict(float), defaultdict(int)
    for index, added in sched.critical_path():
        site = sched.sites[index]
        seconds[site] += added
        counts[site] += 1
    ranked = sorted(seconds.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [PathEntry(op, api, loc, s, counts[(op, api, loc)], s / latency if latency > 0 else 0.0)
            for (op, api, loc), s in ranked]


def summarize(run, *, name: str = "", top: int = 10) -> BenchmarkResult:
    """A BenchmarkResult from a finished KernelRun (timing must have been on)."""
    m = run.machine
    sched = m.scheduler
    chip = m.chip
    latency = sched.end
    busy = {e: sched.busy.get(Engine(e), 0.0) / latency if latency > 0 else 0.0 for e in ENGINES}
    dma = sum(v for u, v in sched.busy.items() if isinstance(u, tuple))
    busy["dma"] = dma / chip.dma_queues / latency if latency > 0 else 0.0
    hbm_seconds = chip.hbm_bytes_per_s_per_core * latency
    return BenchmarkResult(
        name=name or run.name or "kernel", target=chip.name, latency_s=latency, busy=busy,
        dma_bytes=int(m.stats.dma_bytes), hbm_bytes=int(sched.hbm_bytes), flops=float(m.stats.flops),
        mfu=sched.pe_ideal_s / latency if latency > 0 else 0.0,
        hfu=(sched.pe_ideal_s + sched.pe_transpose_ideal_s) / latency if latency > 0 else 0.0,
        mbu=sched.hbm_bytes / hbm_seconds if hbm_seconds > 0 else 0.0,
        critical_path=_critical(sched, latency, top), outputs=run.outputs,
        instructions=sched.count, machine=m)


def benchmark(kernel, *, target=None, numerics: bool = True, trace: bool = False, top: int = 10):
    """benchmark(kernel, target="trn2")(*args, **kwargs) -> BenchmarkResult."""
    from trnlab.nki.tensor import NkiTensor
    from trnlab.runtime import run_kernel

    fn = getattr(kernel, "fn", kernel)
    grid = tuple(getattr(kernel, "grid", (1,)))
    tensor_class = getattr(kernel, "tensor_class", NkiTensor)
    options = getattr(kernel, "options", {}) or {}
    name = getattr(fn, "__name__", "kernel")

    def run(*args, **kwargs) -> BenchmarkResult:
        result = run_kernel(fn, args, kwargs, target=target or options.get("target"), numerics=numerics,
                            timing=True, trace=trace, grid=grid, tensor_class=tensor_class)
        return summarize(result, name=name, top=top)
    return run


def matmul_peak(chip, instr) -> float:
    """Peak FLOP/s of the Tensor engine for this matmul's input dtypes (ARCH / profiler weighting)."""
    dtypes = (instr.stationary.dtype, instr.moving.dtype)
    if dt.float32 in dtypes:
        return chip.peak_fp32_flops
    if getattr(instr, "perf_mode", "none") == "double_row":
        return chip.peak_fp8_flops
    return chip.peak_bf16_flops


__all__ = ["benchmark", "BenchmarkResult", "PathEntry", "summarize"]
