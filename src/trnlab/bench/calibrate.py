"""`trnlab calibrate`: predicted vs measured latency of published hardware measurements.

The four steps of the NKI matrix-multiplication tutorial (TUT-2025-09 matrix_multiplication.rst):
[4096, 8192] @ [8192, 8192] bf16 on one trn1 NeuronCore, run here in timing-only mode.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

# (kernel name in trnlab.kernels.matmul.STEPS, measured ms, source)
MEASURED = [
    ("step1_tiled", 51.80),
    ("step2_hoist_load", 42.96),
    ("step3_block_free", 22.07),
    ("step4_blocked", 6.97),
]
SOURCE = "NKI matrix-multiplication tutorial (aws-neuron-sdk general/nki/tutorials, 2025-09), trn1.32xlarge, 1 NC"
SHAPE = (4096, 8192, 8192)      # M, K, N
TARGET = "trn1"


@dataclass
class Row:
    name: str
    target: str
    predicted_us: float
    measured_us: float

    @property
    def error(self) -> float:
        return self.predicted_us / self.measured_us - 1.0

    def as_dict(self) -> dict:
        return {"name": self.name, "target": self.target, "predicted_us": self.predicted_us,
                "measured_us": self.measured_us, "error": self.error}


def inputs(shape):
    """Zero bf16 operands lhsT [K, M] and rhs [K, N] (timing does not depend on values)."""
    import ml_dtypes
    import numpy as np
    m, k, n = shape
    return np.zeros((k, m), ml_dtypes.bfloat16), np.zeros((k, n), ml_dtypes.bfloat16)


def predict(name: str, *, shape=None, target=TARGET, numerics: bool = False):
    """BenchmarkResult of one tutorial step at `shape` (M, K, N)."""
    from trnlab.kernels.matmul import STEPS
    from trnlab.bench import benchmark
    lhsT, rhs = inputs(shape or SHAPE)
    return benchmark(STEPS[name], target=target, numerics=numerics)(lhsT, rhs)


def calibrate(*, shape=None, target=TARGET, on_step=None) -> list[Row]:
    """Predicted vs measured; measured values scale with the FLOPs when `shape` is not the published one.
    on_step(name) is called before each step is simulated (progress display)."""
    shape = shape or SHAPE
    scale = (shape[0] * shape[1] * shape[2]) / (SHAPE[0] * SHAPE[1] * SHAPE[2])
    rows = []
    for name, ms in MEASURED:
        if on_step:
            on_step(name)
        rows.append(Row(name, getattr(target, "name", target), predict(name, shape=shape, target=target).latency_us,
                        ms * 1e3 * scale))
    return rows


def calibrate_command(json_out: bool = False, tolerance: float = 0.15) -> int:
    from trnlab.console import steps_progress
    with steps_progress("simulating", len(MEASURED)) as on_step:
        rows = calibrate(on_step=on_step)
    if json_out:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        from rich.table import Table

        from trnlab.console import make_console
        table = Table(title=f"trnlab calibration: {SOURCE}; [4096,8192]@[8192,8192] bf16")
        for col in ("kernel", "target", "predicted ms", "measured ms", "error"):
            table.add_column(col, justify="right" if col != "kernel" else "left")
        for r in rows:
            ok = abs(r.error) <= tolerance
            table.add_row(r.name, r.target, f"{r.predicted_us / 1e3:.2f}", f"{r.measured_us / 1e3:.2f}",
                          f"[{'green' if ok else 'red'}]{r.error:+.1%}[/]")
        make_console().print(table)
    return 0 if all(abs(r.error) <= tolerance for r in rows) else 1
