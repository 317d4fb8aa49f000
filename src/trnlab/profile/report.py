"""A single self-contained HTML report: timeline and roofline plots (base64 PNG) plus the summary tables."""
from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path

from trnlab.core import dtypes as dt
from trnlab.profile.source import ENGINES, ProfileData, from_run, track_order
from trnlab.profile.summary import (critical_rows, engine_rows, fmt_pct, fmt_si, fmt_time, overview_rows,
                                    summarize, top_rows)
from trnlab.timing.metrics import peak_flops

MAX_LEGEND = 12


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def timeline_png(data: ProfileData) -> bytes:
    """One row per engine / used DMA queue; each instruction a bar coloured by opcode (time in us)."""
    plt = _pyplot()
    tracks = sorted(set(ENGINES) | {e.track for e in data.events}, key=track_order)
    bars: dict[tuple[str, str], list] = defaultdict(list)
    time_by_op: dict[str, float] = defaultdict(float)
    for e in data.events:
        bars[(e.track, e.name)].append((e.start * 1e6, (e.end - e.start) * 1e6))
        time_by_op[e.name] += e.end - e.start
    ops = sorted(time_by_op, key=lambda op: -time_by_op[op])
    palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("Set3").colors)
    colour = {op: palette[i % len(palette)] for i, op in enumerate(ops)}
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.28 * len(tracks)))
    row = {t: i for i, t in enumerate(tracks)}
    for (track, op), spans in bars.items():
        ax.broken_barh(spans, (row[track] - 0.4, 0.8), facecolors=colour[op], linewidth=0)
    ax.set_yticks(range(len(tracks)), tracks)
    ax.set_ylim(len(tracks) - 0.5, -0.5)
    ax.set_xlim(0, max(data.total_s * 1e6, 1e-3))
    ax.set_xlabel("time (us)")
    ax.set_title(f"Timeline: {data.name} on {data.chip.name} ({fmt_time(data.total_s)})")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[op]) for op in ops[:MAX_LEGEND]]
    if handles:
        ax.legend(handles, ops[:MAX_LEGEND], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  title="opcode", title_fontsize=8)
    return _png(fig)


def roofline_png(summary: dict, chip) -> bytes:
    """Arithmetic intensity (FLOP per DMA byte) vs achieved FLOP/s under the chip's roofs."""
    import numpy as np
    plt = _pyplot()
    bw = chip.hbm_bytes_per_s_per_core
    peak, peak32, peak8 = (peak_flops(chip, (d,)) for d in (dt.bfloat16, dt.float32, dt.float8_e4m3))
    ai = summary["arithmetic_intensity"]
    ridge = peak / bw
    lo = min(ridge / 100, ai / 3 if ai else ridge / 100)
    hi = max(ridge * 100, ai * 3 if ai else 0)
    x = np.logspace(np.log10(lo), np.log10(hi), 256)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.loglog(x, np.minimum(peak, bw * x), color="black", lw=2,
              label=f"roof: bf16 peak {fmt_si(peak, 'FLOP/s')}, HBM/core {fmt_si(bw, 'B/s')}")
    ax.loglog(x, np.minimum(peak32, bw * x), color="grey", lw=1, ls="--",
              label=f"fp32 peak {fmt_si(peak32, 'FLOP/s')}")
    if peak8 != peak:
        ax.loglog(x, np.minimum(peak8, bw * x), color="grey", lw=1, ls="-.",
                  label=f"fp8 peak {fmt_si(peak8, 'FLOP/s')}")
    ax.axvline(ridge, color="black", lw=0.5, ls=":")
    if ai:
        ax.loglog([ai], [summary["achieved_flops_per_s"]], "o", color="tab:red", ms=10,
                  label=f"kernel: {ai:.1f} FLOP/B, {fmt_si(summary['achieved_flops_per_s'], 'FLOP/s')} "
                        f"(MFU {fmt_pct(summary['mfu'])})")
        busy = summary["engines"]["tensor"]["busy_s"]
        if busy > 0:
            ax.loglog([ai], [summary["matmul_flops"] / busy], "^", color="tab:blue", ms=9,
                      label=f"tensor engine while busy (ignores data movement): "
                            f"{fmt_si(summary['matmul_flops'] / busy, 'FLOP/s')}")
    else:
        ax.text(0.68, 0.3, "no matmul FLOPs: pure data movement\n"
                          f"MBU {fmt_pct(summary['mbu'])}", transform=ax.transAxes, ha="center", fontsize=12)
    lowest = min(summary["achieved_flops_per_s"] or peak, bw * lo)
    ax.set_ylim(max(lowest / 5, peak / 1e6), max(peak, peak8) * 3)
    ax.set_xlabel("arithmetic intensity (matmul FLOP / HBM byte)")
    ax.set_ylabel("FLOP/s")
    ax.set_title(f"Roofline: {summary['kernel']} on {summary['target']} (one NeuronCore)")
    ax.grid(which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(headers, rows, cls="") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers) if headers else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}">' + (f"<thead><tr>{head}</tr></thead>" if head else "") + f"<tbody>{body}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f3f3f3} tr:nth-child(even) td{background:#fafafa} td:first-child{font-family:ui-monospace,monospace}
img{max-width:100%;border:1px solid #eee} .note{color:#666;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:32px;align-items:flex-start}
"""


def report_html(obj, summary: dict | None = None, *, trace_file: str | None = "trace.json") -> str:
    data = obj if isinstance(obj, ProfileData) else from_run(obj)
    s = summary or summarize(data)
    queues = [(q, str(v["transfers"]), fmt_si(v["bytes"], "B"), fmt_time(v["busy_s"]), fmt_pct(v["utilization"]))
              for q, v in s["dma"]["queues"].items()]
    counts = list(s["instructions"]["by_opcode"].items())
    parts = [
        f"<h1>trnlab profile: {html.escape(s['kernel'])} on {html.escape(s['target'])}</h1>",
        '<div class="grid"><div><h2>Overview</h2>', _table(None, overview_rows(s), "overview"),
        "</div><div><h2>Engines</h2>", _table(("engine", "instructions", "busy", "utilization"), engine_rows(s)),
        "<h2>Instruction counts</h2>", _table(("engine/opcode", "count"), counts), "</div></div>",
        "<h2>Timeline</h2>",
        _img(timeline_png(data), "timeline") if data.events else
        '<p class="note">No timeline: the run was not traced (trace=True).</p>',
        "<h2>Roofline</h2>", _img(roofline_png(s, data.chip), "roofline"),
        '<p class="note">Roof: min(peak compute, arithmetic intensity x HBM bandwidth per NeuronCore). '
        "MFU counts FLOPs at their dtype's peak (BF16-equivalent: fp32 x4, fp8 x0.5 on trn2+), as AWS's "
        "profiler does; HFU also counts Tensor-engine transposes; MBU counts HBM bytes.</p>",
        "<h2>Top instructions (summed instruction time, grouped by source line)</h2>",
        _table(("file:line", "opcode", "engine", "count", "total", "mean", "total / kernel time"), top_rows(s)),
        '<p class="note">Times are summed over all instances of a line (a DMA counts from its first queue '
        "start to its last queue end); overlapping instances can add up to more than 100% of the kernel time.</p>",
        "<h2>Critical path (the dependency chain that sets the end time), by source line</h2>",
        _table(("file:line", "opcode", "instructions", "time added", "% of kernel time"), critical_rows(s))
        if s.get("critical_path") else '<p class="note">The scheduler reported no critical path.</p>',
        "<h2>DMA queues</h2>",
        _table(("queue", "transfers", "bytes", "busy", "utilization"), queues),
    ]
    if trace_file:
        parts.append(f'<p class="note">Instruction-level trace: <a href="{html.escape(trace_file)}">'
                     f"{html.escape(trace_file)}</a> (open in https://ui.perfetto.dev or chrome://tracing).</p>")
    title = html.escape(f"trnlab profile: {s['kernel']}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_report(obj, path, summary: dict | None = None, *, trace_file: str | None = "trace.json") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(obj, summary, trace_file=trace_file), encoding="utf-8")
    return path
