"""What a benchmark reports: BenchmarkResult (latency, engine utilisation, DMA traffic, FLOPs,
MFU/HFU/MBU, the critical path with kernel source lines) summarised from a timed run's scheduler.

The benchmark entry point itself, trnlab.benchmark, runs kernels through the front ends and so lives
above them (trnlab.bench).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trnlab.isa.base import Engine
from trnlab.timing.metrics import utilization

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
    mfu: float                 # MFU, HFU, MBU: see trnlab.timing.metrics
    hfu: float
    mbu: float
    critical_path: list = field(default_factory=list)    # PathEntry, largest first
    outputs: Any = None
    instructions: int = 0
    machine: Any = None
    spill_bytes: int = 0       # SBUF<->HBM bytes of compiler spills and reloads (CompilerModel.sbuf_spill)

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
                "mbu": self.mbu, "instructions": self.instructions, "spill_bytes": self.spill_bytes,
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
        if self.spill_bytes:
            t.add_row("SBUF spill", f"{fmt_bytes(self.spill_bytes)} of spill/reload DMA (compiler spill)")
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
    totals: dict = {}                 # site -> [seconds, count] (one lookup per path step: the path is long)
    sites = sched.sites
    for index, added in zip(*sched.critical_steps()):
        site = sites[index]
        acc = totals.get(site)
        if acc is None:
            acc = totals[site] = [0.0, 0]
        acc[0] += added
        acc[1] += 1
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]
    return [PathEntry(op, api, loc, s, n, s / latency if latency > 0 else 0.0)
            for (op, api, loc), (s, n) in ranked]


def summarize(run, *, name: str = "", top: int = 10) -> BenchmarkResult:
    """A BenchmarkResult from a finished KernelRun (timing must have been on)."""
    m = run.machine
    sched = m.scheduler
    chip = m.chip
    latency = sched.end
    busy = {e: sched.busy.get(Engine(e), 0.0) / latency if latency > 0 else 0.0 for e in ENGINES}
    dma = sum(v for u, v in sched.busy.items() if isinstance(u, tuple))
    busy["dma"] = dma / chip.dma_queues / latency if latency > 0 else 0.0
    work = sched.work
    u = utilization(chip, work, latency)
    return BenchmarkResult(
        name=name or run.name or "kernel", target=chip.name, latency_s=latency, busy=busy,
        dma_bytes=int(work.dma_bytes), hbm_bytes=int(work.hbm_bytes), flops=float(work.flops),
        mfu=u.mfu, hfu=u.hfu, mbu=u.mbu, critical_path=_critical(sched, latency, top), outputs=run.outputs,
        instructions=sched.count, machine=m, spill_bytes=int(m.stats.spill_bytes))


__all__ = ["BenchmarkResult", "PathEntry", "summarize"]
