"""LNC launches detect deadlock by the programs' state, never by wall-clock time."""
import time

import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core.machine import current
from trnlab.core import lnc


def _wait_until_blocked(program: int) -> None:
    """Hold the calling program until `program` is blocked in a wait (so it really waits for us)."""
    group = lnc.group_of(current())
    while program not in group.blocked:
        time.sleep(0.005)


SLOW = {"on": True}


@nki.jit
def slow_swap(a):
    out = nl.ndarray((2, 64, 32), dtype=a.dtype, buffer=nl.shared_hbm)
    pid = nl.program_id(0)
    mine = nl.ndarray((64, 32), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=mine, src=a[pid])
    if pid == 1 and SLOW["on"]:
        _wait_until_blocked(0)
        time.sleep(0.5)                      # busy (not waiting) while program 0 waits for us
    theirs = nl.ndarray((64, 32), dtype=a.dtype, buffer=nl.sbuf)
    nisa.sendrecv(src=mine, dst=theirs, send_to_rank=1 - pid, recv_from_rank=1 - pid, pipe_id=0)
    nisa.core_barrier(out, (0, 1))
    nisa.dma_copy(dst=out[pid], src=theirs)
    return out


def test_a_slow_program_is_waited_for_however_long_it_takes(monkeypatch):
    # Whatever wall-clock budget a clock-based wait had, the slowed program exceeds it; before, waits
    # gave up after lnc.TIMEOUT_S (60 s) and a correct kernel failed on a busy host.
    monkeypatch.setattr(lnc, "TIMEOUT_S", 0.05, raising=False)
    a = np.random.default_rng(0).random((2, 64, 32), dtype=np.float32)
    out = nki.simulate(slow_swap[2])(a)
    np.testing.assert_array_equal(out[0], a[1])
    np.testing.assert_array_equal(out[1], a[0])


def test_the_slowdown_does_not_change_simulated_time(monkeypatch):
    a = np.zeros((2, 64, 32), dtype=np.float32)
    slow = slow_swap[2].run((a,), {}).machine.scheduler.end
    monkeypatch.setitem(SLOW, "on", False)
    fast = slow_swap[2].run((a,), {}).machine.scheduler.end
    assert slow == fast > 0


@nki.jit
def crossed_pipes(a):
    t = nl.ndarray((4, 4), dtype=a.dtype, buffer=nl.sbuf)
    nisa.memset(dst=t, value=0.0)
    pid = nl.program_id(0)
    # program 0 listens on pipe 0, program 1 sends and listens on pipe 1: nobody receives what is sent
    nisa.sendrecv(src=t, dst=t, send_to_rank=1 - pid, recv_from_rank=1 - pid, pipe_id=pid)
    return a


def test_a_real_deadlock_is_reported_by_state():
    with pytest.raises(lnc.SyncError, match="deadlock, every running program is waiting") as info:
        nki.simulate(crossed_pipes[2])(np.zeros((4, 4), np.float32))
    assert "program 0 in nisa.sendrecv" in str(info.value) and "program 1 in nisa.sendrecv" in str(info.value)
