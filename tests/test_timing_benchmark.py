"""trnlab.benchmark results; determinism; numerics on/off give identical schedules; hazard regions."""
import ml_dtypes
import numpy as np
import pytest

import trnlab
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core.machine import Machine, running
from trnlab.kernels import matmul as mm
from trnlab.nki.tensor import NkiTensor
from trnlab.timing import Scheduler
from trnlab.timing.hazards import HazardTracker, region


@pytest.fixture(scope="module")
def operands():
    return mm.example_inputs(K=1024, M=2048, N=1024)


def schedule(kernel, args, numerics):
    run = kernel.run(args, {}, target="trn1", numerics=numerics, trace=True)
    s = run.machine.scheduler
    return s.end, [(e.name, e.track, e.start, e.end, e.nbytes) for e in s.records], run.outputs


@pytest.mark.parametrize("name", list(mm.STEPS))
def test_numerics_on_and_off_give_identical_times(operands, name):
    end_on, events_on, out = schedule(mm.STEPS[name], operands, True)
    end_off, events_off, _ = schedule(mm.STEPS[name], operands, False)
    assert end_on == end_off
    assert events_on == events_off
    assert np.isfinite(out.astype(np.float32)).all()


# Predicted latency of step 4 at [2048,1024]@[1024,1024] bf16 on trn1: a literal, fixed when the cost
# model was last changed (simulated time is deterministic, so any run must reproduce it).
BLOCKED_TRN1_S = 141.5850076394199e-6


def test_predicted_latency_is_a_fixed_number(operands):
    end, _, _ = schedule(mm.matmul_blocked, operands, False)
    assert end == pytest.approx(BLOCKED_TRN1_S, rel=1e-9)


def test_benchmark_result_fields(operands):
    lhsT, rhs = operands
    r = trnlab.benchmark(mm.matmul_blocked, target="trn1")(lhsT, rhs)
    ref = lhsT.astype(np.float32).T @ rhs.astype(np.float32)
    np.testing.assert_allclose(r.outputs.astype(np.float32), ref, rtol=2 ** -7, atol=2 ** -6 * np.abs(ref).max())
    t = BLOCKED_TRN1_S
    assert r.latency_s == pytest.approx(t, rel=1e-9) and r.latency_us == pytest.approx(t * 1e6, rel=1e-9)
    flops = 2 * 1024 * 2048 * 1024
    assert r.flops == flops
    # MFU = FLOPs / (trn1 bf16 peak x latency), peak = 128 x 128 PEs x 2 FLOP x 2.8 GHz (NC-v2 guide: "92
    # TFLOPS"); no transposes here, so HFU == MFU
    assert r.mfu == pytest.approx(flops / (128 * 128 * 2 * 2.8e9 * t), rel=1e-9)
    assert r.hfu == pytest.approx(r.mfu, rel=1e-12)
    # one block in M, N and K: 256 matmuls (8 K tiles x 16 M tiles x 2 N tiles) of 512 moving columns,
    # one column per PE cycle at 2.8 GHz; LoadStationary hides behind the previous matmul
    assert r.busy["tensor"] * t == pytest.approx(256 * 512 / 2.8e9, rel=1e-9)
    assert 0 < r.busy["dma"] <= 1 and r.busy["scalar"] == 0
    # HBM traffic: lhsT (1024 x 2048) and rhs (1024 x 1024) read once, the bf16 result written once
    hbm = (1024 * 2048 + 1024 * 1024 + 2048 * 1024) * 2
    assert r.hbm_bytes == r.dma_bytes == hbm
    # MBU against the per-core share of trn1 HBM bandwidth: 820 GB/s per chip / 2 cores
    assert r.mbu == pytest.approx(hbm / (820e9 / 2 * t), rel=1e-9)
    assert r.dma_bandwidth == pytest.approx(hbm / t, rel=1e-9)
    top = r.critical_path[0]
    assert top.loc.endswith(".py:" + top.loc.rsplit(":", 1)[1]) and "matmul.py" in top.loc
    assert sum(p.seconds for p in r.critical_path) <= r.latency_s * (1 + 1e-9)
    assert "critical" in str(r)
    assert set(r.as_dict()) >= {"latency_us", "busy", "dma_bytes", "dma_bandwidth", "flops", "mfu", "hfu", "mbu",
                                "critical_path"}


def test_benchmark_plain_function():
    def add(a, b):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        ta = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        tb = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=ta, src=a)
        nisa.dma_copy(dst=tb, src=b)
        nisa.tensor_tensor(dst=ta, data1=ta, data2=tb, op=nl.add)
        nisa.dma_copy(dst=out, src=ta)
        return out
    a = np.ones((128, 256), np.float32)
    r = trnlab.benchmark(add, target="trn2")(a, a)
    np.testing.assert_array_equal(r.outputs, 2 * a)
    assert r.flops == 0 and r.mfu == 0
    assert r.dma_bytes == 3 * a.nbytes
    # by hand (trn2): each DMA puts 8 partitions x 1 KiB on each of the 16 queues, q seconds at 23 B/ns x 0.44 x
    # 1024 / (1024 + 128); the second load's fixed ~1.3 us overlaps the first, its bytes queue behind them.
    # The add is max(64, c * N) Vector cycles (c = 1.375, the fitted trn2 two-input rate; ISA: 2) plus the
    # 60-cycle result latency at 0.96 GHz.
    q = 8 * 1024 / (23e9 * 0.44 * 1024 / (1024 + 128))
    assert r.latency_s == pytest.approx(1.3e-6 + 2 * q + (1.375 * 256 + 60) / 0.96e9 + 1.3e-6 + q, rel=1e-9)
    # load, load (in parallel on the queues) -> add -> store: the critical path names the store line
    assert any(p.api == "nisa.dma_copy" for p in r.critical_path)
    assert r.target == "trn2"


def test_timing_only_does_not_fill_big_hbm_outputs():
    m = Machine("trn1", numerics=False, scheduler=Scheduler, tensor_class=NkiTensor)
    t = m.new_hbm((8192, 8192), ml_dtypes.bfloat16, "big")
    assert t.array.shape == (8192, 8192) and not np.isnan(t.array[0, 0])


def test_hbm_row_blocks_are_disjoint_regions():
    m = Machine("trn1", numerics=False, scheduler=Scheduler, tensor_class=NkiTensor)
    with running(m):
        out = m.new_hbm((256, 1024), np.float32, "out")
        a, b = out[0:128, 0:512], out[0:128, 512:1024]
        c = out[64:192, 256:768]
    ra, rb, rc = region(a), region(b), region(c)
    assert ra == (0, 128, 0, 2048) and rb == (0, 128, 2048, 4096)
    assert rc == (64, 192, 1024, 3072)
    tracker = HazardTracker()
    sp = tracker.space(a)
    tracker.record(sp, ra, sp.keys(ra), True, 5.0, "dma", 0)
    assert tracker.wait(sp, rb, sp.keys(rb), True, None, (0.0, -1)) == (0.0, -1)     # disjoint: no wait
    assert tracker.wait(sp, rc, sp.keys(rc), False, None, (0.0, -1)) == (5.0, 0)     # overlap: RAW


def test_covered_entries_are_pruned():
    m = Machine("trn1", numerics=False, scheduler=Scheduler, tensor_class=NkiTensor)
    with running(m):
        t = nl.ndarray((128, 4096), dtype=nl.float32, buffer=nl.sbuf)
        src = nl.ndarray((128, 4096), dtype=nl.float32, buffer=nl.sbuf)
        for i in range(1000):
            nisa.tensor_copy(dst=t[:, (i % 8) * 512:(i % 8 + 1) * 512], src=src[:, 0:512])
        nisa.tensor_copy(dst=t, src=src)        # covers everything before it
    sp = m.scheduler.hazards.spaces["sbuf"]
    live = sum(len(v) for v in sp.writes.values())
    assert live <= 16 * 2                        # one whole-tile write per 1 KiB bucket (16 KiB / 1 KiB)
