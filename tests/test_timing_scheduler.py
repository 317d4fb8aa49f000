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


def test_hazard_pruning_drops_exactly_the_covered_entries_in_order():
    """_drop_covered removes in place the entries a box covers that end no later, keeping the others in
    their order (ready() breaks ties by the first entry found). Oracle: a plain filter."""
    from trnlab.timing.hazards import _drop_covered
    rng = np.random.default_rng(0)
    for _ in range(300):
        entries = []
        for i in range(int(rng.integers(1, 7))):
            p0, b0 = int(rng.integers(0, 4)), int(rng.integers(0, 4))
            entries.append([p0, p0 + int(rng.integers(1, 3)), b0, b0 + int(rng.integers(1, 3)),
                            float(rng.integers(0, 4)), None, i])
        box, t = (0, 4, 0, 4) if rng.random() < 0.5 else (1, 3, 1, 3), 2.0

        def covered(x):
            return x[4] <= t and box[0] <= x[0] and x[1] <= box[1] and box[2] <= x[2] and x[3] <= box[3]
        first = next((i for i, x in enumerate(entries) if covered(x)), None)
        if first is None:
            continue
        expected = [x for x in entries if not covered(x)]
        lst = list(entries)
        _drop_covered(lst, first, *box, t)
        assert lst == expected


def test_views_of_one_box_share_their_hazard_access():
    """Two view objects of the same box (a loop cutting the same tile again) get the same access, and a
    write through one is seen by a read through the other (RAW)."""
    from trnlab.isa import Memset, TensorCopy
    m = Machine("trn2", scheduler=Scheduler)
    a = _tile(m, (128, 64), "k.py:1", "a")
    v1, v2 = a.index((slice(None), slice(0, 32))), a.index((slice(None), slice(0, 32)))
    assert v1 is not v2
    hz = m.scheduler.hazards
    assert hz.accesses(Memset(api="nisa.memset", loc="k.py:2", dst=v1, value=0.0))[0] is \
        hz.accesses(Memset(api="nisa.memset", loc="k.py:2", dst=v2, value=0.0))[0]
    m.issue(Memset(api="nisa.memset", loc="k.py:2", dst=v1, value=0.0))
    written = m.scheduler.end
    c = _tile(m, (128, 32), "k.py:3", "c")
    start, _ = m.scheduler.schedule(TensorCopy(api="nisa.tensor_copy", loc="k.py:4", dst=c, src=v2))
    assert start >= written                           # waited for the memset written through v1


@pytest.mark.parametrize("target", ["trn2", "trn3"])
def test_a_hardware_dge_dma_starts_after_its_600_ns_not_the_software_1300_ns(target):
    # ARCH v3: ~600 ns per DGE-based DMA instruction; DMAG: ~1,300 ns descriptor + semaphore cost otherwise.
    # One 128 x 64 fp32 load, nothing before it: it ends at fixed start + bytes / (its queues' rate)
    from trnlab.isa import DmaCopy

    def end(hwdge):
        m = Machine(target, scheduler=Scheduler)
        src = m.hbm_tensor(np.ones((128, 64), np.float32), "x")
        m.issue(DmaCopy(api="nisa.dma_copy", loc="k.py:1", dst=_tile(m, (128, 64), "k.py:1"), src=src,
                        raw_bytes=hwdge))
        return m.scheduler.end
    assert end(False) - end(True) == pytest.approx(1.3e-6 - 0.6e-6, rel=1e-9)
