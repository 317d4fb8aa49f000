"""Speed of the timing model.

1. The step-4 (fully blocked) matmul-tutorial kernel, [4096,8192] @ [8192,8192] bf16 on one trn1
   NeuronCore, timing-only: wall seconds and simulated instructions per second (goal: < 10 s).
2. Side by side with SCALE-Sim (a cycle-level systolic-array simulator) on a 1024x1024x1024 GEMM on
   a 128x128 array: both wall times and cycle counts (goal: trnlab >= 100x faster). SCALE-Sim runs in
   its own venv (.venv-scalesim next to this repo, created on first use: pip install scalesim with
   numpy<2.4); it is never installed into the main environment.

Usage: python benchmarks/timing_speed.py [--skip-scalesim]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import ml_dtypes
import numpy as np

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-scalesim"

SCALESIM_RUNNER = textwrap.dedent('''
    import json, sys, tempfile, time
    from scalesim.scale_sim import scalesim
    M, N, K, rows, cols = (int(x) for x in sys.argv[1:6])
    d = tempfile.mkdtemp()
    open(f"{d}/cfg.cfg", "w").write(f"""[general]
    run_name = trnlab_gemm

    [architecture_presets]
    ArrayHeight: {rows}
    ArrayWidth: {cols}
    IfmapSramSzkB: 6144
    FilterSramSzkB: 6144
    OfmapSramSzkB: 2048
    IfmapOffset: 0
    FilterOffset: 10000000
    OfmapOffset: 20000000
    Bandwidth: 10
    Dataflow: ws
    ReadRequestBuffer: 32
    WriteRequestBuffer: 32

    [layout]
    IfmapCustomLayout: False
    IfmapSRAMBankBandwidth: 10
    IfmapSRAMBankNum: 10
    IfmapSRAMBankPort: 2
    FilterCustomLayout: False
    FilterSRAMBankBandwidth: 10
    FilterSRAMBankNum: 10
    FilterSRAMBankPort: 2

    [sparsity]
    SparsitySupport: false
    SparseRep: ellpack_block
    OptimizedMapping: false
    BlockSize: 8
    RandomNumberGeneratorSeed: 40

    [run_presets]
    InterfaceBandwidth: CALC
    UseRamulatorTrace: False
    """.replace("\\n    ", "\\n"))
    open(f"{d}/gemm.csv", "w").write(f"Layer, M, N, K,\\nGEMM, {M}, {N}, {K},\\n")
    open(f"{d}/layout.csv", "w").write("Layer, a, b, c, d, e, f, g, h, i,\\nGEMM, 1, 1, 1, 1, 1, 1, 1, 1, 1,\\n")
    t = time.perf_counter()
    s = scalesim(save_disk_space=True, verbose=False, config=f"{d}/cfg.cfg", topology=f"{d}/gemm.csv",
                 layout=f"{d}/layout.csv", input_type_gemm=True)
    s.run_scale(top_path=d)
    wall = time.perf_counter() - t
    # scalesim 3.0.0's get_total_cycles() indexes a method; read the per-layer compute reports directly
    layers = s.runner.single_layer_sim_object_list
    print(json.dumps({"cycles": sum(int(l.get_compute_report_items()[0]) for l in layers), "wall_s": wall}))
''')


def zeros(*shape):
    return np.zeros(shape, ml_dtypes.bfloat16)


def run_step4(m, k, n, *, cpu: list | None = None, **blocks):
    """(wall s, instructions, predicted s) of the step-4 kernel, timing-only on trn1; appends the
    process CPU seconds to `cpu` (on a shared machine the wall time also counts other processes)."""
    import trnlab
    from trnlab.kernels.matmul import matmul_blocked
    lhsT, rhs = zeros(k, m), zeros(k, n)
    t, c = time.perf_counter(), time.process_time()
    r = trnlab.benchmark(matmul_blocked, target="trn1", numerics=False)(lhsT, rhs, **blocks)
    if cpu is not None:
        cpu.append(time.process_time() - c)
    return time.perf_counter() - t, r.instructions, r.latency_s


def ensure_scalesim_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} (scalesim, numpy<2.4) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy<2.4", "scalesim"], check=True)
    return python


def run_scalesim(m, n, k, rows=128, cols=128) -> dict:
    python = ensure_scalesim_venv()
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(SCALESIM_RUNNER)
    t = time.perf_counter()
    out = subprocess.run([str(python), f.name, str(m), str(n), str(k), str(rows), str(cols)],
                         capture_output=True, text=True, check=True)
    os.unlink(f.name)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - t
    return result


def main() -> None:
    from trnlab.hw import TRN1
    cpu: list = []
    wall, count, predicted = run_step4(4096, 8192, 8192, cpu=cpu)
    print(f"step-4 GEMM 4096x8192x8192 bf16, trn1, timing-only: {wall:.2f} s wall, {count} instructions, "
          f"{count / wall:,.0f} instructions/s, predicted {predicted * 1e3:.2f} ms (goal < 10 s, >= 50,000/s)")
    print(f"  process CPU time {cpu[0]:.2f} s: {count / cpu[0]:,.0f} instructions per CPU second "
          f"(the wall time above includes waiting for a busy machine's cores)")
    if "--skip-scalesim" in sys.argv:
        return
    # 1024^3 on a 128x128 array: our step-4 kernel with blocks that divide 1024
    blocks = dict(TILES_IN_BLOCK_M=8, TILES_IN_BLOCK_N=2, TILES_IN_BLOCK_K=8)
    run_step4(1024, 1024, 1024, **blocks)                 # warm-up (imports)
    wall, count, predicted = run_step4(1024, 1024, 1024, **blocks)
    ours_cycles = predicted * TRN1.tensor_hz
    ss = run_scalesim(1024, 1024, 1024)
    print("GEMM 1024x1024x1024 on a 128x128 array:")
    print(f"  trnlab    {wall:8.3f} s wall  {ours_cycles:12,.0f} cycles (whole kernel incl. DMA, at the 2.8 GHz PE clock; "
          f"{count} instructions)")
    print(f"  SCALE-Sim {ss['wall_s']:8.3f} s wall  {ss['cycles']:12,} cycles (ws dataflow; process {ss['process_wall_s']:.1f} s)")
    print(f"  speed ratio: trnlab is {ss['wall_s'] / wall:,.0f}x faster (goal >= 100x)")


if __name__ == "__main__":
    main()
