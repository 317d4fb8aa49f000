"""The numbers of a profile: time, engine utilization, MFU, MBU, DMA totals, instruction counts, hot lines.

Definitions: utilization(track) = busy time / kernel time; MFU, HFU and MBU as defined once in
trnlab.timing.metrics (FLOPs at their dtype's peak, AWS's profiler weighting; MBU over HBM bytes).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from trnlab.profile.source import ENGINES, ProfileData, from_run, instructions, is_dma, track_order
from trnlab.timing.metrics import utilization


def _counts(data: ProfileData, instrs: list[dict]) -> tuple[dict, dict]:
    """(count by engine, count by 'engine/opcode') of instructions (not DMA queue pieces)."""
    if data.traced:
        by_op = Counter(f"{i['engine']}/{i['name']}" for i in instrs)
        by_engine = Counter(i["engine"] for i in instrs)
    else:
        by_op = Counter(dict(getattr(data.stats, "instructions", {}) or {}))
        by_engine = Counter({str(getattr(k, "value", k)): v
                             for k, v in (getattr(data.stats, "by_engine", {}) or {}).items()})
    return dict(by_engine.most_common()), dict(by_op.most_common())


def top_instructions(data: ProfileData, instrs: list[dict] | None = None, n: int = 15) -> list[dict]:
    """Instruction groups (same opcode, engine and source line) by summed instruction time (a DMA's
    time is its span from first queue start to last queue end; queue_time_s sums its queues)."""
    groups: dict[tuple, dict] = {}
    for i in instrs if instrs is not None else instructions(data.events):
        key = (i["loc"], i["name"], i["engine"])
        g = groups.setdefault(key, {"loc": i["loc"], "opcode": i["name"], "engine": i["engine"],
                                    "api": i["api"], "count": 0, "time_s": 0.0, "queue_time_s": 0.0,
                                    "flops": 0.0, "bytes": 0})
        g["count"] += 1
        g["time_s"] += i["end"] - i["start"]
        g["queue_time_s"] += i["queue_time"]
        g["flops"] += i["flops"]
        g["bytes"] += i["nbytes"]
    rows = sorted(groups.values(), key=lambda g: -g["time_s"])[:n]
    for g in rows:
        g["mean_s"] = g["time_s"] / g["count"]
        g["share_of_total"] = g["time_s"] / data.total_s if data.total_s else 0.0
    return rows


def critical_groups(data: ProfileData, n: int = 10) -> list[dict]:
    """The critical path (the dependency chain that sets the end time) grouped by source line."""
    groups: dict[tuple, dict] = {}
    for opcode, api, loc, added in data.critical:
        g = groups.setdefault((loc, opcode), {"loc": loc, "opcode": opcode, "api": api, "count": 0,
                                              "time_s": 0.0})
        g["count"] += 1
        g["time_s"] += added
    rows = sorted(groups.values(), key=lambda g: -g["time_s"])[:n]
    for g in rows:
        g["share_of_total"] = g["time_s"] / data.total_s if data.total_s else 0.0
    return rows


def summarize(obj) -> dict:
    """The summary dict (what summary.json holds); obj is ProfileData, a KernelRun, Machine or Kernel."""
    data = obj if isinstance(obj, ProfileData) else from_run(obj)
    chip, total = data.chip, data.total_s

    def util(busy):
        return busy / total if total > 0 else 0.0

    work = data.work
    raw_flops, dma_bytes = work.flops, int(work.dma_bytes)
    u = utilization(chip, work, total)
    hbm_bw = chip.hbm_bytes_per_s_per_core
    instrs = instructions(data.events)
    by_engine, by_opcode = _counts(data, instrs)

    engines = {t: {"busy_s": data.busy.get(t, 0.0), "utilization": util(data.busy.get(t, 0.0)),
                   "instructions": by_engine.get(t, 0)} for t in ENGINES}
    queues = sorted((t for t in data.busy if is_dma(t)), key=track_order)
    dma_busy = sum(data.busy[t] for t in queues)
    per_queue = defaultdict(lambda: {"transfers": 0, "bytes": 0})
    for e in data.events:
        if is_dma(e.track):
            per_queue[e.track]["transfers"] += 1
            per_queue[e.track]["bytes"] += int(e.nbytes)
    dma = {
        "instructions": by_engine.get("dma", 0),
        "queue_transfers": sum(v["transfers"] for v in per_queue.values()),   # a DMA spans several queues
        "bytes": dma_bytes, "queues_used": len(queues),
        "busy_s": dma_busy,
        "achieved_bytes_per_s": dma_bytes / total if total > 0 else 0.0,
        "peak_bytes_per_s": chip.dma_queues * chip.dma_queue_bytes_per_s,
        "queue_utilization": dma_busy / (chip.dma_queues * total) if total > 0 else 0.0,
        "queues": {q: {"busy_s": data.busy[q], "utilization": util(data.busy[q]), **per_queue[q]}
                   for q in queues},
    }
    busiest = max(list(engines.items()) + [(q, v) for q, v in dma["queues"].items()],
                  key=lambda kv: kv[1]["utilization"], default=(None, {"utilization": 0.0}))
    summary = {
        "kernel": data.name, "target": chip.name, "traced": data.traced,
        "total_s": total, "total_us": total * 1e6,
        "engines": engines, "dma": dma,
        "matmul_flops": raw_flops, "bf16_equivalent_flops": work.mfu_s * chip.peak_bf16_flops,
        "achieved_flops_per_s": raw_flops / total if total > 0 else 0.0,
        "peak_bf16_flops": chip.peak_bf16_flops, "peak_fp32_flops": chip.peak_fp32_flops,
        "mfu": u.mfu, "hfu": u.hfu,
        "hbm_bytes": int(work.hbm_bytes), "hbm_bytes_per_s_per_core": hbm_bw, "mbu": u.mbu,
        "arithmetic_intensity": raw_flops / work.hbm_bytes if work.hbm_bytes else None,   # per HBM byte
        "busiest_unit": busiest[0], "busiest_utilization": busiest[1]["utilization"],
        "instructions": {"total": sum(by_engine.values()), "by_engine": by_engine, "by_opcode": by_opcode},
        "top_instructions": top_instructions(data, instrs),
        "critical_path": critical_groups(data),
    }
    if "cc" in data.busy or data.ranks:
        summary["collective_us"] = data.busy.get("cc", 0.0) * 1e6
        summary["ranks"] = [_rank_row(r, d) for r, d in enumerate(data.ranks)]
    return summary


def _rank_row(rank: int, data: ProfileData) -> dict:
    """A rank of a multi-rank launch: its kernel time and its time in collectives (the "cc" unit busy)."""
    return {"rank": rank, "total_us": data.total_s * 1e6, "collective_us": data.busy.get("cc", 0.0) * 1e6}


def write_summary(summary: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    return path


# --- terminal -------------------------------------------------------------------------------------

def fmt_time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e9:.0f} ns"


def fmt_si(value: float, unit: str) -> str:
    if unit == "B":          # byte amounts in binary units (KiB/MiB/GiB) everywhere in trnlab's output
        from trnlab.console import fmt_bytes
        return fmt_bytes(value)
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def fmt_pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def overview_rows(s: dict) -> list[tuple[str, str]]:
    ai = s["arithmetic_intensity"]
    return [
        ("kernel", f"{s['kernel']} on {s['target']}"),
        ("total time", fmt_time(s["total_s"])),
        ("MFU / HFU", f"{fmt_pct(s['mfu'])} / {fmt_pct(s['hfu'])} (FLOPs at their dtype's peak; bf16 peak "
                      f"{fmt_si(s['peak_bf16_flops'], 'FLOP/s')})"),
        ("MBU", f"{fmt_pct(s['mbu'])}: HBM traffic {fmt_si(s['hbm_bytes'], 'B')} at "
                f"{fmt_si(s['hbm_bytes_per_s_per_core'], 'B/s')} per core"),
        ("matmul FLOPs", f"{fmt_si(s['matmul_flops'], 'FLOP')} ({fmt_si(s['achieved_flops_per_s'], 'FLOP/s')})"),
        ("DMA", f"{fmt_si(s['dma']['bytes'], 'B')} by {s['dma']['instructions']} DMA instructions on "
                f"{s['dma']['queues_used']} queues ({fmt_si(s['dma']['achieved_bytes_per_s'], 'B/s')})"),
        ("arithmetic intensity", "-" if ai is None else f"{ai:.2f} FLOP per HBM byte"),
        ("busiest unit", f"{s['busiest_unit']} ({fmt_pct(s['busiest_utilization'])} busy)"),
        ("instructions", str(s["instructions"]["total"])),
    ]


def engine_rows(s: dict) -> list[tuple[str, ...]]:
    rows = [(name, str(e["instructions"]), fmt_time(e["busy_s"]), fmt_pct(e["utilization"]))
            for name, e in s["engines"].items()]
    d = s["dma"]
    rows.append((f"dma ({d['queues_used']} queues used, mean over all)", str(d["instructions"]), fmt_time(d["busy_s"]),
                 fmt_pct(d["queue_utilization"])))
    return rows


def short_loc(loc: str) -> str:
    """'/long/path/kernel.py:12' -> 'kernel.py:12' (summary.json keeps the full path)."""
    path, _, line = (loc or "").rpartition(":")
    return f"{Path(path).name}:{line}" if path else loc


def top_rows(s: dict) -> list[tuple[str, ...]]:
    return [(short_loc(g["loc"]), g["opcode"], g["engine"], str(g["count"]), fmt_time(g["time_s"]),
             fmt_time(g["mean_s"]), fmt_pct(g["share_of_total"])) for g in s["top_instructions"]]


def critical_rows(s: dict) -> list[tuple[str, ...]]:
    return [(short_loc(g["loc"]), g["opcode"], str(g["count"]), fmt_time(g["time_s"]), fmt_pct(g["share_of_total"]))
            for g in s.get("critical_path", [])]


def print_summary(s: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"trnlab profile: {s['kernel']} ({s['target']})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for row in overview_rows(s):
        table.add_row(*row)
    console.print(table)

    engines = Table(title="Engines (utilization = busy / kernel time)")
    for col in ("engine", "instructions", "busy", "utilization"):
        engines.add_column(col, justify="right" if col != "engine" else "left")
    for row in engine_rows(s):
        engines.add_row(*row)
    console.print(engines)

    counts = Table(title="Instruction counts")
    counts.add_column("engine/opcode")
    counts.add_column("count", justify="right")
    for op, n in s["instructions"]["by_opcode"].items():
        counts.add_row(op, str(n))
    console.print(counts)

    if s["top_instructions"]:
        top = Table(title="Top instructions by time (grouped by source line)")
        for col in ("file:line", "opcode", "engine", "n", "total", "mean", "%time"):
            top.add_column(col, justify="left" if col in ("file:line", "opcode", "engine") else "right",
                           no_wrap=True)
        for row in top_rows(s)[:10]:
            top.add_row(*row)
        console.print(top)

    if s.get("critical_path"):
        crit = Table(title="Critical path (the dependency chain that sets the end time), by source line")
        for col in ("file:line", "opcode", "n", "time added", "%time"):
            crit.add_column(col, justify="left" if col in ("file:line", "opcode") else "right", no_wrap=True)
        for row in critical_rows(s):
            crit.add_row(*row)
        console.print(crit)

    if s.get("ranks"):
        ranks = Table(title="Ranks (the summary above is the slowest rank's)")
        for col in ("rank", "kernel time", "in collectives"):
            ranks.add_column(col, justify="right")
        for r in s["ranks"]:
            ranks.add_row(str(r["rank"]), fmt_time(r["total_us"] / 1e6), fmt_time(r["collective_us"] / 1e6))
        console.print(ranks)
