"""Tests of trnlab.frontend.lnc."""
import time

import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
import trnlab.nki.ntensor as ntensor
from trnlab.core import lnc
from trnlab.errors import NkiValidationError


# --- LNC synchronisation is charged in the timing model ------------------------------------------------

@nki.jit
def _skewed_barrier(a):
    """Program 1 does much more work before the barrier; after it, both do one small DMA."""
    scratch = nl.ndarray((2, 32, 16), dtype=a.dtype, buffer=nl.shared_hbm)
    pid = nl.program_id(0)
    t = nl.ndarray((32, 16), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=a[pid])
    if pid == 1:
        for _ in range(40):
            nisa.tensor_scalar(dst=t, data=t, op0=nl.multiply, operand0=1.0)
    nisa.dma_copy(dst=scratch[pid], src=t)
    nisa.core_barrier(scratch, (0, 1))
    other = nl.ndarray((32, 16), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=other, src=scratch[1 - pid])
    return scratch


@nki.jit
def _skewed_swap(a):
    """Program 1 is busy before the exchange: program 0's receiving DMA waits for its data."""
    out = nl.ndarray((2, 64, 32), dtype=a.dtype, buffer=nl.shared_hbm)
    pid = nl.program_id(0)
    mine = nl.ndarray((64, 32), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=mine, src=a[pid])
    if pid == 1:
        for _ in range(40):
            nisa.tensor_scalar(dst=mine, data=mine, op0=nl.multiply, operand0=1.0)
    theirs = nl.ndarray((64, 32), dtype=a.dtype, buffer=nl.sbuf)
    nisa.sendrecv(src=mine, dst=theirs, send_to_rank=1 - pid, recv_from_rank=1 - pid, pipe_id=0)
    return out


rng = np.random.default_rng(11)


@nki.jit
def _scale_rows_by_identity_lnc(x):
    # each program of an LNC2 launch handles half of the rows; ntensor (a module global) builds an identity
    p, f = x.shape
    half = p // 2
    pid = nl.program_id(0)
    eye = nl.shared_constant(ntensor.identity(f, nl.float32))
    e_sb = nl.ndarray((f, f), dtype=nl.float32, buffer=nl.sbuf)
    nisa.dma_copy(dst=e_sb, src=eye)
    x_sb = nl.ndarray((half, f), dtype=x.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=x_sb, src=x[pid * half:(pid + 1) * half, :])
    d = nl.ndarray((half, f), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=d, data1=x_sb, data2=e_sb[0:half, :], op=nl.add)
    out = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out[pid * half:(pid + 1) * half, :], src=d)
    return out


@nki.jit
def swap(a):
    """Each program loads its half, sends it to the other core, and stores what it received."""
    out = nl.ndarray((2, 64, 32), dtype=a.dtype, buffer=nl.shared_hbm)
    pid = nl.program_id(0)
    mine = nl.ndarray((64, 32), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=mine, src=a[pid])
    theirs = nl.ndarray((64, 32), dtype=a.dtype, buffer=nl.sbuf)
    nisa.sendrecv(src=mine, dst=theirs, send_to_rank=1 - pid, recv_from_rank=1 - pid, pipe_id=0)
    nisa.dma_copy(dst=out[pid], src=theirs)
    return out


@nki.jit
def halves(a):
    """Program p writes row block p of a shared scratch tensor; after the barrier it reads the OTHER block."""
    scratch = nl.ndarray((2, 32, 16), dtype=a.dtype, buffer=nl.shared_hbm)
    out = nl.ndarray((2, 32, 16), dtype=a.dtype, buffer=nl.shared_hbm)
    pid = nl.program_id(0)
    t = nl.ndarray((32, 16), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=a[pid])
    doubled = nl.ndarray((32, 16), dtype=a.dtype, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=doubled, data=t, op0=nl.multiply, operand0=2.0)
    if pid == 1:
        time.sleep(0.05)             # a slow writer: without the barrier, program 0 would read NaN sentinels
    nisa.dma_copy(dst=scratch[pid], src=doubled)
    nisa.core_barrier(scratch, (0, 1))
    other = nl.ndarray((32, 16), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=other, src=scratch[1 - pid])
    nisa.dma_copy(dst=out[pid], src=other)
    return out


def _barrier_helper(x):
    return nisa.core_barrier(x, (0, 1))


def _kernel_calling_helper(x):
    return _barrier_helper(x)


def test_core_barrier_makes_later_work_wait_for_the_partner():
    a = np.random.default_rng(0).random((2, 32, 16), dtype=np.float32)
    run = _skewed_barrier[2].run((a,), {})
    s0, s1 = (m.scheduler for m in run.machines)
    # program 1 reached the barrier later; program 0's post-barrier DMA cannot start before that.
    assert s0.end == pytest.approx(s1.end, rel=1e-9)
    # by hand (trn2): each [32, 16] fp32 DMA costs ~1.3 us plus 8 partitions x 64 B per queue at
    # 23 B/ns x 0.44 x 64 / (64 + 128); program 1 runs load, 40 dependent tensor_scalar (max(64, 16) Vector
    # cycles each plus the 60-cycle result latency, at 0.96 GHz), store, barrier, load
    dma = 1.3e-6 + 8 * 64 / (23e9 * 0.44 * 64 / (64 + 128))
    assert s1.end == pytest.approx(3 * dma + 40 * (64 + 60) / 0.96e9, rel=1e-9)
    again = _skewed_barrier[2].run((a,), {})          # deterministic, whatever the thread interleaving
    assert [m.scheduler.end for m in again.machines] == [s0.end, s1.end]


def test_sendrecv_receiver_waits_for_the_senders_data():
    a = np.random.default_rng(0).random((2, 64, 32), dtype=np.float32)
    busy = _skewed_swap[2].run((a,), {})
    s0, s1 = (m.scheduler for m in busy.machines)
    pre = [e for e in s1.sites if e[0] == "tensor_scalar"]
    assert len(pre) == 40
    last_ts = max(end for end, site in zip(s1.ends, s1.sites) if site[0] == "tensor_scalar")
    assert s0.end > last_ts                 # program 0's receive finished after program 1's data existed


def test_lnc2_launch_of_kernel_whose_module_uses_nki_tensor():
    x = rng.standard_normal((16, 16)).astype(np.float32)
    out = np.asarray(nki.simulate(_scale_rows_by_identity_lnc[2])(x))
    eye = np.eye(16, dtype=np.float32)
    ref = np.concatenate([x[:8] + eye[:8], x[8:] + eye[:8]])
    np.testing.assert_array_equal(out, ref)               # adding 0 or 1 once: exact


def test_sendrecv_swaps_tiles_between_the_two_cores():
    a = np.random.default_rng(0).random((2, 64, 32), dtype=np.float32)
    run = swap[2].run((a,), {})
    np.testing.assert_array_equal(run.outputs[0], a[1])
    np.testing.assert_array_equal(run.outputs[1], a[0])
    assert len(run.machines) == 2 and run.machines[0] is not run.machines[1]
    # each core issued its own 2 DMAs + 1 sendrecv DMA
    assert [m.stats.instructions["dma_copy"] for m in run.machines] == [3, 3]
    assert [m.program_id for m in run.machines] == [(0,), (1,)]


def test_core_barrier_orders_shared_hbm_writes_and_reads():
    a = np.random.default_rng(1).random((2, 32, 16), dtype=np.float32)
    import warnings
    for _ in range(3):                                   # thread interleavings vary; the result must not
        with warnings.catch_warnings():
            warnings.simplefilter("error")               # an uninitialised read would warn
            out = nki.simulate(halves[2])(a)
        np.testing.assert_array_equal(out[0], 2 * a[1])
        np.testing.assert_array_equal(out[1], 2 * a[0])


def test_latency_is_the_slowest_core():
    a = np.random.default_rng(2).random((2, 32, 16), dtype=np.float32)
    run = halves[2].run((a,), {})
    ends = [m.scheduler.end for m in run.machines]
    assert run.machine.scheduler.end == max(ends)
    # by hand (trn2), both programs: load, multiply (max(64, 16) Vector cycles + 60-cycle result latency at
    # 0.96 GHz), store, barrier, load, store; each [32, 16] fp32 DMA costs ~1.3 us plus 8 partitions x 64 B per
    # queue at 23 B/ns x 0.44 x 64 / (64 + 128). time.sleep in program 1 is host time, not simulated time.
    dma = 1.3e-6 + 8 * 64 / (23e9 * 0.44 * 64 / (64 + 128))
    assert ends == pytest.approx([4 * dma + (64 + 60) / 0.96e9] * 2, rel=1e-9)


def test_kernels_without_sync_keep_one_sequential_machine():
    @nki.jit
    def plain(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        pid = nl.program_id(0)
        t = nl.load(a[pid * 16:(pid + 1) * 16])
        nl.store(out[pid * 16:(pid + 1) * 16], nl.add(t, 1.0))
        return out
    a = np.random.default_rng(3).random((32, 8), dtype=np.float32)
    run = plain[2].run((a,), {})
    assert run.machines is None
    np.testing.assert_array_equal(run.outputs, a + 1)
    forced = nki.jit(plain.fn, lnc_threads=True)[2].run((a,), {})   # threads on request: same result
    assert len(forced.machines) == 2
    np.testing.assert_array_equal(forced.outputs, a + 1)


def test_sync_detection_follows_helper_functions_and_closures():
    assert lnc.uses_sync(swap) and lnc.uses_sync(halves)
    assert lnc.uses_sync(_kernel_calling_helper)             # a module-level helper

    def inner(x):
        return _barrier_helper(x)

    def outer(x):
        return inner(x)                                      # a closure
    assert lnc.uses_sync(outer)
    assert not lnc.uses_sync(lambda x: nl.load(x))


def test_partner_that_skips_the_barrier_fails_fast():

    @nki.jit
    def only_p0(a):
        if nl.program_id(0) == 0:
            nisa.core_barrier(a, (0, 1))
        return a
    with pytest.raises(lnc.SyncError, match="finished without reaching it"):
        nki.simulate(only_p0[2])(np.zeros((4, 4), np.float32))


def test_mismatched_waits_are_a_deadlock():
    @nki.jit
    def crossed(a):
        t = nl.ndarray((4, 4), dtype=a.dtype, buffer=nl.sbuf)
        if nl.program_id(0) == 0:
            nisa.core_barrier(a, (0, 1))
        else:
            nisa.sendrecv(src=t, dst=t, send_to_rank=0, recv_from_rank=0, pipe_id=3)
        return a
    with pytest.raises(lnc.SyncError, match="deadlock"):
        nki.simulate(crossed[2])(np.zeros((4, 4), np.float32))


def test_partner_error_is_the_one_reported():
    @nki.jit
    def p1_fails(a):
        if nl.program_id(0) == 1:
            raise ValueError("program 1 broke")
        nisa.core_barrier(a, (0, 1))
        return a
    with pytest.raises(ValueError, match="program 1 broke"):
        nki.simulate(p1_fails[2])(np.zeros((4, 4), np.float32))


def test_sync_needs_trn2_and_an_lnc_launch():
    def k(a):
        nisa.core_barrier(a, (0, 1))
        return a
    with pytest.raises(NkiValidationError, match="single program"):
        nki.simulate(k)(np.zeros((4, 4), np.float32))
    with pytest.raises(NkiValidationError, match="NeuronCore-v3"):
        nki.simulate(nki.jit(k, target="trn1")[2])(np.zeros((4, 4), np.float32))


def test_sendrecv_shape_mismatch_is_reported():
    @nki.jit
    def bad(a):
        pid = nl.program_id(0)
        src = nl.ndarray((8, 4 + 4 * pid), dtype=a.dtype, buffer=nl.sbuf)
        nisa.memset(dst=src, value=1.0)
        dst = nl.ndarray((8, 4 + 4 * pid), dtype=a.dtype, buffer=nl.sbuf)
        nisa.sendrecv(src=src, dst=dst, send_to_rank=1 - pid, recv_from_rank=1 - pid, pipe_id=0)
        return a
    with pytest.raises(NkiValidationError, match="shapes and dtypes must match"):
        nki.simulate(bad[2])(np.zeros((4, 4), np.float32))
