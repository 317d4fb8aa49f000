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


def test_deterministic(operands):
    a = schedule(mm.matmul_blocked, operands, False)
    b = schedule(mm.matmul_blocked, operands, False)
    assert a[0] == b[0] and a[1] == b[1]


def test_benchmark_result_fields(operands):
    lhsT, rhs = operands
    r = trnlab.benchmark(mm.matmul_blocked, target="trn1")(lhsT, rhs)
    ref = lhsT.astype(np.float32).T @ rhs.astype(np.float32)
    np.testing.assert_allclose(r.outputs.astype(np.float32), ref, rtol=2 ** -7, atol=2 ** -6 * np.abs(ref).max())
    assert r.latency_us == pytest.approx(r.latency_s * 1e6)
    assert r.flops == 2.0 * 1024 * 2048 * 1024
    # MFU = FLOPs at bf16 peak / latency; no transposes here, so HFU == MFU
    assert r.mfu == pytest.approx(r.flops / (r.machine.chip.peak_bf16_flops * r.latency_s))
    assert r.hfu == pytest.approx(r.mfu)
    assert 0 < r.busy["tensor"] <= 1 and 0 < r.busy["dma"] <= 1 and r.busy["scalar"] == 0
    # HBM traffic: inputs read once per (n, k) / (n, k, m) block, the result written once
    assert r.hbm_bytes == r.dma_bytes
    assert r.mbu == pytest.approx(r.hbm_bytes / (r.machine.chip.hbm_bytes_per_s_per_core * r.latency_s))
    assert r.dma_bandwidth == pytest.approx(r.dma_bytes / r.latency_s)
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
