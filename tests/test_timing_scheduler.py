"""Tests of trnlab.timing.scheduler."""
import numpy as np
import pytest

from trnlab.core.machine import Machine
from trnlab.timing import Scheduler


def _tile(m, shape, loc, name="t"):
    return m.new_onchip("sbuf", shape, np.float32, name, api="test", loc=loc)


def test_scheduler_wait_until_delays_later_instructions():
    m = Machine("trn2", scheduler=Scheduler)
    t = _tile(m, (128, 64), "k.py:1")
    m.scheduler.wait_until(1e-3)
    from trnlab.isa import Memset
    m.issue(Memset(api="nisa.memset", loc="k.py:2", dst=t, value=0.0))
    # the memset starts at the wait: fp32 memset of 64 elements is max(64, N) = 64 Vector cycles at 0.96 GHz
    assert m.scheduler.end == pytest.approx(1e-3 + 64 / 0.96e9, rel=1e-9)
