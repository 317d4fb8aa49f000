"""`trnlab calibrate`: predicted vs measured latency of published hardware measurements.

Every point runs one of our calibration kernels (bench.published: written with the structure of the
kernel AWS measured) in timing-only mode, and has a role:
- fit: constants of the timing model were fitted to it (docs/calibration.md names which);
- validate: never fitted to; its error measures the model;
- bound: a published upper limit (nki-samples perf tests); the prediction must not exceed it.
The default set is quick; `--all` adds the long rows (rmsnorm_quant at S=32K, the Mamba sequence table).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field

from trnlab.errors import TrnlabError

ROLES = ("fit", "validate", "bound")

MM_SRC = ("https://github.com/aws-neuron/aws-neuron-sdk/blob/3eaf01ad78c37447c9c6f22ec34a980c0d16c0c9/"
          "general/nki/tutorials/matrix_multiplication.rst")
RQ_SRC = ("https://github.com/aws-neuron/nki-samples/blob/1ee7f1d/doc/nki_samples.reference.rmsnorm_quant.rst "
          "(Performance Targets, trn2 LNC=2)")
MAMBA_SRC = ("https://github.com/aws-neuron/aws-neuron-sdk/blob/3eaf01ad78c37447c9c6f22ec34a980c0d16c0c9/"
             "general/nki/tutorials/fused_mamba.rst")


@dataclass(frozen=True)
class Point:
    """One published measurement: which kernel, at which shape, on which target, measured how long."""
    name: str
    family: str                 # matmul | rmsnorm_quant | mamba
    kernel: str                 # key in the family's kernel table (bench.published)
    shape: tuple                # matmul (M, K, N); rmsnorm_quant (S, H); mamba (seq, channels)
    target: str
    role: str
    measured_us: float
    source: str
    quick: bool = True          # in the default set
    grid: int = 1               # launch grid (rmsnorm_quant: LNC=2 -> 2 programs on 2 physical cores)


def _mm(name, key, ms):
    return Point(name, "matmul", key, (4096, 8192, 8192), "trn1", "fit", ms * 1e3, MM_SRC)


def _rq(s, h, us, quick):
    return Point(f"rmsnorm_quant_S{s // 1024}K_H{h}", "rmsnorm_quant", "rmsnorm_quant", (s, h), "trn2", "fit",
                 us, RQ_SRC, quick, grid=2)


def _mamba(version, seq, ch, ms, quick=False):
    return Point(f"mamba_{version}_seq{seq}_c{ch}", "mamba", version, (seq, ch), "trn1", "validate", ms * 1e3,
                 MAMBA_SRC, quick)


_V2 = (4.4, 8.9, 13.1, 17.6, 23.7, 27.5, 41.3, 52.2)     # ms at seq 1024 .. 8192, channels 4096
_V3 = (3.3, 6.6, 10.1, 13.3, 17.3, 19.6, 24.2, 27.8)
POINTS: list[Point] = [
    _mm("mm_step1_tiled", "mm_step1_tiled", 51.80),
    _mm("mm_step2_hoist_load", "mm_step2_hoist_load", 42.96),
    _mm("mm_step3_block_free", "mm_step3_block_free", 22.07),
    _mm("mm_step4_fully_blocked", "mm_step4_fully_blocked", 6.97),
    _rq(2048, 8192, 458.2, True),
    _rq(32768, 8192, 6287.0, False),
    _rq(2048, 16384, 866.81, True),
    _rq(32768, 16384, 13214.40, False),
    _mamba("v1", 512, 256, 0.17293, quick=True),
    _mamba("v1", 512, 4096, 2.34, quick=True),
    _mamba("v2", 512, 4096, 1.61, quick=True),
    *[_mamba("v2", 1024 * (i + 1), 4096, ms, quick=(i == 0)) for i, ms in enumerate(_V2)],
    *[_mamba("v3", 1024 * (i + 1), 4096, ms, quick=(i == 0)) for i, ms in enumerate(_V3)],
]


@dataclass
class Row:
    name: str
    target: str
    predicted_us: float
    measured_us: float
    role: str = "fit"
    source: str = ""
    failure: str = ""          # why trnlab could not run the point (then predicted_us is None)

    @property
    def error(self) -> float | None:
        return None if self.predicted_us is None else self.predicted_us / self.measured_us - 1.0

    @property
    def ok(self) -> bool:
        if self.predicted_us is None:
            return False
        return self.predicted_us <= self.measured_us if self.role == "bound" else True

    def as_dict(self) -> dict:
        d = {"name": self.name, "target": self.target, "role": self.role, "predicted_us": self.predicted_us,
             "measured_us": self.measured_us, "error": self.error}
        if self.failure:
            d["failure"] = self.failure
        return d


@dataclass
class RoleStats:
    role: str
    n: int
    median_abs: float
    max_abs: float
    rows: list = field(default_factory=list)


def role_stats(rows: list[Row]) -> dict[str, RoleStats]:
    """Median and max |error| of the rows of each role present."""
    out = {}
    for role in ROLES:
        errs = [abs(r.error) for r in rows if r.role == role and r.error is not None]
        if errs:
            out[role] = RoleStats(role, len(errs), statistics.median(errs), max(errs))
    return out


# --- running a point ---------------------------------------------------------------------------------------
def _inputs(point: Point, shape):
    import ml_dtypes
    import numpy as np
    if point.family == "matmul":
        m, k, n = shape
        return np.zeros((k, m), ml_dtypes.bfloat16), np.zeros((k, n), ml_dtypes.bfloat16)
    if point.family == "rmsnorm_quant":
        s, h = shape
        return np.zeros((1, s, h), ml_dtypes.bfloat16), np.zeros((1, h), ml_dtypes.bfloat16)
    seq, ch = shape
    ones = np.ones((1, ch, seq), np.float32)
    bc = np.ones((1, 16, seq), np.float32)
    return ones, ones.copy(), -np.ones((ch, 16), np.float32), bc, bc.copy()


def kernel_of(point: Point):
    from trnlab.bench import published
    table = {"matmul": published.MATMUL_STEPS, "rmsnorm_quant": {"rmsnorm_quant": published.rmsnorm_quant},
             "mamba": published.MAMBA}[point.family]
    k = table[point.kernel]
    if point.grid > 1:
        k = k[point.grid]
        k.options["lnc_threads"] = True      # each program on its own physical NeuronCore (LNC=2)
    return k


def predict_run(point: Point, *, shape=None, chip=None, trace: bool = False):
    """The KernelRun of the point's kernel at `shape` (default: the published one), timing only; `chip`
    overrides the target preset (a ChipSpec, used by the fitting script)."""
    k = kernel_of(point)
    return k.run(_inputs(point, shape or point.shape), {}, target=chip or point.target, numerics=False, trace=trace)


def predict_us(point: Point, *, shape=None, chip=None) -> float:
    """Predicted measured latency: the simulated kernel time plus the chip's fitted kernel_launch_s (the
    fixed time a measurement includes beyond the engines' and queues' work; docs/calibration.md)."""
    return predict_run(point, shape=shape, chip=chip).device_latency_s * 1e6


def calibrate(points=None, *, on_step=None, chips=None) -> list[Row]:
    """Predicted vs measured for each point; chips: {target name: ChipSpec} overrides (fitting)."""
    rows = []
    for p in points if points is not None else [p for p in POINTS if p.quick]:
        if on_step:
            on_step(p.name)
        chip = (chips or {}).get(p.target)
        try:
            rows.append(Row(p.name, p.target, predict_us(p, chip=chip), p.measured_us, p.role, p.source))
        except TrnlabError as exc:      # e.g. SBUF capacity where neuronx-cc spills: reported, not hidden
            rows.append(Row(p.name, p.target, None, p.measured_us, p.role, p.source,
                            f"{type(exc).__name__}: {str(exc).split('. ')[0]}"))
    return rows


# --- the command --------------------------------------------------------------------------------------------
def calibrate_command(json_out: bool = False, tolerance: float = 0.15, all_points: bool = False) -> int:
    """Exit 0 when every fit row is within `tolerance` and every bound holds; validation rows are reported
    (their error is what the model gets wrong on data it was not fitted to), not gated."""
    from trnlab.console import steps_progress
    points = [p for p in POINTS if all_points or p.quick]
    with steps_progress("simulating", len(points)) as on_step:
        rows = calibrate(points, on_step=on_step)
    stats = role_stats(rows)
    if json_out:
        print(json.dumps(rows_json(rows, stats), indent=2))
    else:
        _print_table(rows, stats, tolerance)
    bad = [r for r in rows if r.role != "validate" and (not r.ok or (r.role == "fit" and abs(r.error) > tolerance))]
    return 1 if bad else 0


def rows_json(rows, stats) -> list[dict]:
    """The rows, then one summary entry per role (name "summary:<role>")."""
    out = [r.as_dict() for r in rows]
    out += [{"name": f"summary:{s.role}", "role": s.role, "n": s.n, "median_abs_error": s.median_abs,
             "max_abs_error": s.max_abs} for s in stats.values()]
    return out


def _print_table(rows, stats, tolerance) -> None:
    from rich.table import Table

    from trnlab.console import make_console
    table = Table(title="trnlab calibration: predicted vs published hardware latency (docs/calibration.md)")
    for col in ("point", "role", "target", "predicted us", "measured us", "error"):
        table.add_column(col, justify="left" if col in ("point", "role") else "right")
    for r in rows:
        if r.predicted_us is None:
            table.add_row(r.name, r.role, r.target, "-", f"{r.measured_us:,.1f}", f"[red]{r.failure}[/]")
            continue
        good = r.ok and (r.role != "fit" or abs(r.error) <= tolerance)
        table.add_row(r.name, r.role, r.target, f"{r.predicted_us:,.1f}", f"{r.measured_us:,.1f}",
                      f"[{'green' if good else 'red'}]{r.error:+.1%}[/]")
    console = make_console()
    console.print(table)
    for s in stats.values():
        console.print(f"{s.role}: {s.n} points, median |error| {s.median_abs:.1%}, max |error| {s.max_abs:.1%}")
