"""What a profile is made from: one finished run's chip, scheduled events, busy times and counters.

Accepts a KernelRun, a Machine, or a Kernel whose `last_run` is set. Events exist only when the
run's scheduler had trace=True; the summary degrades gracefully without them (no per-instruction data).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trnlab.timing.metrics import Work

ENGINES = ("tensor", "vector", "scalar", "gpsimd")


@dataclass
class ProfileData:
    name: str                       # kernel name (for titles and file names)
    chip: object                    # trnlab.hw.ChipSpec
    total_s: float                  # scheduler end time
    busy: dict[str, float]          # track -> busy seconds
    events: list                    # trnlab.timing.scheduler.Event records (empty without trace)
    stats: object = None            # trnlab.core.machine.RunStats
    traced: bool = True
    critical: list = field(default_factory=list)   # [(opcode, api, loc, seconds added)], last first
    work: Work = field(default_factory=Work)         # the scheduler's FLOP and byte totals (MFU/HFU/MBU)
    ranks: list = field(default_factory=list)       # a multi-rank launch: each rank's ProfileData, in rank order


def track_name(unit) -> str:
    """Scheduler unit -> track name: Engine.TENSOR -> 'tensor', ('dma', 3) -> 'dma.q3'."""
    if isinstance(unit, tuple) and len(unit) == 2 and str(unit[0]) == "dma":
        return f"dma.q{unit[1]}"
    return str(getattr(unit, "value", unit))


def is_dma(track: str) -> bool:
    return track.startswith("dma")


def dma_queue_index(track: str) -> int:
    try:
        return int(track.rsplit("q", 1)[1])
    except (IndexError, ValueError):
        return 10_000


def track_order(track: str) -> tuple:
    """Engines first in hardware order, then DMA queues by number, then anything else."""
    if track in ENGINES:
        return (0, ENGINES.index(track), "")
    if is_dma(track):
        return (1, dma_queue_index(track), track)
    return (2, 0, track)


def from_run(obj, name: str | None = None) -> ProfileData:
    """Build ProfileData from a KernelRun, a Machine or a Kernel (its last_run); ProfileData passes through."""
    if isinstance(obj, ProfileData):
        if name:
            obj.name = name
        return obj
    if getattr(obj, "last_run", None) is not None:        # a Kernel object
        name = name or getattr(obj, "__name__", None)
        obj = obj.last_run
    machine = getattr(obj, "machine", obj)
    name = name or getattr(obj, "name", "") or "kernel"
    sched = getattr(machine, "scheduler", None)
    if sched is None:
        raise ValueError(f"kernel '{name}' ran with timing=False: there is no schedule to profile")
    records = getattr(sched, "records", None)
    busy: dict[str, float] = {}
    for unit, seconds in sched.busy.items():
        track = track_name(unit)
        busy[track] = busy.get(track, 0.0) + float(seconds)
    ranks = [from_run(m, name) for m in obj.machines] \
        if getattr(obj, "system", None) is not None and getattr(obj, "machines", None) else []
    return ProfileData(name=name, chip=machine.chip, total_s=float(sched.end), busy=busy,
                       events=list(records or []), stats=getattr(machine, "stats", None),
                       traced=records is not None, critical=critical_path(sched), work=sched.work, ranks=ranks)


def critical_path(sched) -> list[tuple[str, str, str, float]]:
    """The scheduler's critical path as (opcode, api, loc, seconds it added), when it offers one."""
    path = getattr(sched, "critical_path", None)
    sites = getattr(sched, "sites", None)
    if not callable(path) or sites is None:
        return []
    return [(*sites[i], float(added)) for i, added in path()]


def instructions(events) -> list[dict]:
    """Events merged per instruction (a DMA has one event per queue it used, sharing `index`):
    [{name, engine, tracks, start, end, loc, api, detail, flops, nbytes, queue_time}] in issue order."""
    merged: dict = {}
    for n, e in enumerate(events):
        key = getattr(e, "index", -1)
        key = key if key is not None and key >= 0 else ("event", n)
        m = merged.get(key)
        if m is None:
            merged[key] = {"name": e.name, "engine": "dma" if is_dma(e.track) else e.track,
                           "tracks": [e.track], "start": e.start, "end": e.end, "loc": e.loc, "api": e.api,
                           "detail": e.detail, "flops": e.flops, "nbytes": int(e.nbytes),
                           "queue_time": e.end - e.start}
            continue
        m["tracks"].append(e.track)
        m["start"], m["end"] = min(m["start"], e.start), max(m["end"], e.end)
        m["flops"] += e.flops
        m["nbytes"] += int(e.nbytes)
        m["queue_time"] += e.end - e.start
    return list(merged.values())
