"""The model report: per-op table, latency, MFU, HBM use, throughput, cost and numerics."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from trnlab.console import fmt_bytes, natural_width
from trnlab.core import dtypes as dt
from trnlab.hw import ChipSpec
from trnlab.timing.metrics import peak_flops, ratio


@dataclass
class NumericsCheck:
    output: str
    max_abs_err: float
    max_rel_err: float      # max |out - ref| / max |ref|
    bound: float            # allowed max_rel_err for the dtype
    ok: bool
    nonfinite_mismatches: int = 0   # positions where one side is NaN/inf and the other is not the same


# Allowed error relative to the output's largest magnitude. bf16 keeps 8 significant bits
# (unit roundoff 2^-9 = 0.2%) on every stored activation; a few layers of rounding stay within a few %.
BOUNDS = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 1e-2}


@dataclass
class Report:
    model: str
    target: str
    dtype: str
    tokens: int                         # tokens processed by one run (batch x seq)
    latency_s: float
    model_flops: float
    hw_flops: float
    peak_flops: float
    weights_bytes: int
    activation_peak_bytes: int
    hbm_capacity_bytes: int
    usd_per_hour: float
    instance: str
    instance_cores: int
    price_source: str
    instructions: int
    ops: list = field(default_factory=list)            # OpRecord
    numerics: list = field(default_factory=list)       # NumericsCheck
    fallbacks: list = field(default_factory=list)      # dicts: op, source, share
    engine_busy: dict = field(default_factory=dict)
    mode: str = "numerics"                              # "numerics" | "timing-only"
    phase: str = "prefill"
    wall_s: float = 0.0
    compile_s: float = 0.0
    decode: "Report | None" = None
    hw_pe_s: float = 0.0                # Tensor-engine FLOPs at their dtype's peak (timing.metrics)

    # --- derived numbers ---
    @property
    def mfu(self) -> float:
        return ratio(self.model_flops / self.peak_flops, self.latency_s)

    @property
    def hfu(self) -> float:
        return ratio(self.hw_pe_s, self.latency_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.latency_s if self.latency_s else 0.0

    @property
    def usd_per_million_tokens(self) -> float:
        """Cost of one NeuronCore for the time it takes: $/h / cores-per-instance, per token."""
        if not self.tokens_per_s:
            return 0.0
        per_core_s = self.usd_per_hour / self.instance_cores / 3600.0
        return per_core_s / self.tokens_per_s * 1e6

    @property
    def numerics_ok(self) -> bool:
        return all(c.ok for c in self.numerics)

    def to_dict(self) -> dict:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("ops", "decode")}
        d.update(mfu=self.mfu, hfu=self.hfu, tokens_per_s=self.tokens_per_s,
                 usd_per_million_tokens=self.usd_per_million_tokens, numerics_ok=self.numerics_ok)
        d["ops"] = [dataclasses.asdict(o) for o in self.ops]
        d["decode"] = self.decode.to_dict() if self.decode is not None else None
        return d

    def to_json(self, **kw) -> str:
        """Strict JSON: a non-finite number (an error of inf, a NaN) is written as its string."""
        return strict_json(self.to_dict(), **kw)

    # --- terminal output ---
    def print(self, console=None, top: int = 15) -> None:
        from rich.console import Console
        console = console or Console()
        tables = [op_table(self, top), summary_table(self)] + ([numerics_table(self)] if self.numerics else [])
        with natural_width(console, tables):
            for t in tables:
                console.print(t)
        for f in self.fallbacks:
            console.print(f"[yellow]CPU fallback[/]: {f['op']} at {f['source']} ({f['share']:.1%} of ops)")

    def __str__(self) -> str:
        return printed_text(self.print)


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_usd(x: float) -> str:
    """Dollars with 3 significant digits ($0.000127, $1.27e-05 below a hundredth of a cent, $12.7, $1,270)."""
    if x >= 1000:
        return f"${x:,.0f}"
    return f"${x:.3g}"


def grouped_ops(report: Report) -> list[dict]:
    """Ops grouped by (op, output shape): count, total time and share."""
    groups: dict = {}
    for o in report.ops:
        key = (o.op.replace("aten.", "").replace(".default", ""), _short_dtype(o.out), o.where)
        g = groups.setdefault(key, {"op": key[0], "out": key[1], "where": key[2], "count": 0, "time_s": 0.0,
                                    "instructions": 0, "model_flops": 0.0, "dma_bytes": 0,
                                    "source": o.source})
        g["count"] += 1
        g["time_s"] += o.time_s
        g["instructions"] += o.instructions
        g["model_flops"] += o.model_flops
        g["dma_bytes"] += o.dma_bytes
    return sorted(groups.values(), key=lambda g: -g["time_s"])


def op_table(report: Report, top: int = 15):
    from rich.table import Table
    t = Table(title=f"{report.model} {report.phase} on one {report.target} NeuronCore ({report.dtype}, "
                    f"{report.mode}) - ops by predicted time")
    for col, just in (("op", "left"), ("output", "left"), ("n", "right"), ("time", "right"), ("share", "right"),
                      ("instr", "right"), ("TF/s", "right"), ("DMA", "right"), ("model line", "left")):
        t.add_column(col, justify=just, overflow="fold", no_wrap=col in ("time", "share", "n", "TF/s"))
    for g in grouped_ops(report)[:top]:
        share = g["time_s"] / report.latency_s if report.latency_s else 0.0
        rate = g["model_flops"] / g["time_s"] / 1e12 if g["time_s"] and g["model_flops"] else 0.0
        t.add_row(g["op"] + (" [yellow](cpu)[/]" if g["where"] != "device" else ""), g["out"], str(g["count"]),
                  fmt_time(g["time_s"]), f"{share:.1%}", str(g["instructions"]), f"{rate:.1f}" if rate else "",
                  fmt_bytes(g["dma_bytes"]), _short_src(g["source"]))
    return t


def _short_dtype(s: str) -> str:
    for long, short in (("bfloat16", "bf16"), ("float32", "f32"), ("float16", "f16"), ("int64", "i64"),
                        ("int32", "i32"), (" ", "")):
        s = s.replace(long, short)
    return s


def _short_src(src: str) -> str:
    """basename:line of 'path:line  code'."""
    where = src.split("  ", 1)[0]
    path, _, line = where.rpartition(":")
    return f"{os.path.basename(path)}:{line}" if path else where


def summary_table(report: Report):
    from rich.table import Table
    t = Table(title="Summary", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    for k, v in summary_rows(report):
        t.add_row(k, v)
    return t


def summary_rows(r: Report) -> list[tuple[str, str]]:
    rows = [("predicted latency", f"{fmt_time(r.latency_s)} ({r.phase}, {r.tokens} tokens)"),
            ("throughput", f"{r.tokens_per_s:,.0f} tokens/s on one NeuronCore"),
            ("MFU", f"{r.mfu:.1%} (model FLOPs {r.model_flops / 1e9:.2f} G / peak {r.peak_flops / 1e12:.1f} TF/s); "
                    f"HFU {r.hfu:.1%}"),
            ("HBM", f"weights {fmt_bytes(r.weights_bytes)} + peak activations "
                    f"{fmt_bytes(r.activation_peak_bytes)} of {fmt_bytes(r.hbm_capacity_bytes)} per NeuronCore"),
            ("cost", f"{fmt_usd(r.usd_per_million_tokens)} per million tokens "
                     f"({r.instance} ${r.usd_per_hour:.2f}/h / {r.instance_cores} NeuronCores)"),
            ("price source", r.price_source),
            ("instructions", f"{r.instructions:,} ISA instructions on one simulated NeuronCore"),
            ("simulation", f"compile {r.compile_s:.1f} s, run {r.wall_s:.1f} s wall")]
    if r.engine_busy:
        busy = ", ".join(f"{k} {v / r.latency_s:.0%}" for k, v in r.engine_busy.items() if r.latency_s)
        rows.insert(3, ("engine utilisation", busy))
    if r.decode is not None:
        d = r.decode
        rows.insert(2, ("decode", f"{fmt_time(d.latency_s)} per step ({d.tokens} tokens/step) = "
                                  f"{d.tokens_per_s:,.0f} tokens/s, {fmt_usd(d.usd_per_million_tokens)}/M tokens, "
                                  f"MFU {d.mfu:.2%}"))
    return rows


def numerics_table(report: Report):
    from rich.table import Table
    t = Table(title=f"Numerics vs eager PyTorch (fp32 reference), {report.dtype} on the device")
    for col in ("output", "max abs err", "max rel err", "bound", "ok"):
        t.add_column(col)
    for c in report.numerics:
        t.add_row(c.output, f"{c.max_abs_err:.3g}", f"{c.max_rel_err:.3g}", f"{c.bound:.0e}",
                  "[green]yes[/]" if c.ok else "[red]NO[/]" + _nonfinite_note(c))
    return t


def _nonfinite_note(c: NumericsCheck) -> str:
    n = c.nonfinite_mismatches
    return f" ({n} NaN/inf where eager differs)" if n else ""


def chip_fields(chip: ChipSpec, dtype_name: str) -> dict:
    return dict(target=chip.name, peak_flops=peak_flops(chip, (dt.canonical(dtype_name),)), hbm_capacity_bytes=chip.hbm_bytes_per_core,
                usd_per_hour=chip.instance_usd_per_hour, instance=chip.instance, instance_cores=chip.instance_cores,
                price_source=chip.price_source)


# --- kernel lines -> aten ops (the model's report.html) ---------------------------------------------
def kernel_line_ops(run) -> list[dict]:
    """Which aten op (and model line) issued each kernel line's instructions: one row per (kernel
    line, op, model line) with its instruction count and summed instruction time, largest first.

    Op i of run.ops issued the instructions numbered from the sum of the earlier ops' counts
    (Event.index is the instruction number in program order; a DMA's queue pieces share it)."""
    owner, first = {}, 0
    for rec in run.ops:
        for i in range(first, first + rec.instructions):
            owner[i] = rec
        first += rec.instructions
    spans: dict = {}
    for e in getattr(run.machine.scheduler, "records", None) or []:
        start, end, loc = spans.get(e.index, (e.start, e.end, e.loc))
        spans[e.index] = (min(start, e.start), max(end, e.end), loc)
    rows: dict = {}
    for index, (start, end, loc) in spans.items():
        rec = owner.get(index)
        if rec is None:
            continue
        key = (_short_src(loc), rec.op.replace("aten.", ""), _short_src(rec.source))
        row = rows.setdefault(key, {"kernel_line": key[0], "op": key[1], "model_line": key[2],
                                    "instructions": 0, "time_s": 0.0})
        row["instructions"] += 1
        row["time_s"] += end - start
    return sorted(rows.values(), key=lambda r: -r["time_s"])


def kernel_lines_html(run, top: int = 40) -> str:
    """An HTML section: kernel lines mapped to the aten op and model line that issued them."""
    import html
    rows = "".join(f"<tr><td>{html.escape(r['kernel_line'])}</td><td>{html.escape(r['op'])}</td>"
                   f"<td>{html.escape(r['model_line'])}</td><td>{r['instructions']}</td>"
                   f"<td>{fmt_time(r['time_s'])}</td></tr>" for r in kernel_line_ops(run)[:top])
    return ("<h2>Kernel lines by the model op that issued them</h2><table><tr><th>kernel file:line</th>"
            "<th>aten op</th><th>model line</th><th>instructions</th><th>summed instruction time</th></tr>"
            f"{rows}</table>")


def add_kernel_lines(report_html, run) -> None:
    """Insert kernel_lines_html into a written report.html (before </body>)."""
    from pathlib import Path
    path = Path(report_html)
    text = path.read_text(encoding="utf-8")
    at = text.rfind("</body>")
    at = len(text) if at < 0 else at
    path.write_text(text[:at] + kernel_lines_html(run) + text[at:], encoding="utf-8")


def strict_json(value, **kw) -> str:
    """JSON with every non-finite number written as its string (a report's to_json)."""
    return json.dumps(_finite(value), default=str, allow_nan=False, **kw)


def printed_text(print_fn) -> str:
    """What print_fn(console) prints, as plain text at 120 columns (a report's __str__)."""
    from rich.console import Console
    with open(os.devnull, "w") as sink:           # record only; closed, not left to the garbage collector
        console = Console(width=120, record=True, file=sink)
        print_fn(console)
        return console.export_text()


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

