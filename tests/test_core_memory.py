"""Tests of trnlab.core.memory."""
import numpy as np
import pytest

from trnlab.core.machine import Machine
from trnlab.errors import NkiValidationError, PsumCapacityError, SbufCapacityError


def _tile(m, shape, loc, name="t"):
    return m.new_onchip("sbuf", shape, np.float32, name, api="test", loc=loc)


def test_failed_sbuf_allocation_does_not_reclaim_the_previous_instance():
    m = Machine("trn2")
    cap = m.chip.sbuf_bytes_per_partition
    old = _tile(m, (128, cap // 4 // 2), "k.py:5", "old")    # half of SBUF, allocated at site k.py:5
    other = _tile(m, (128, cap // 4 // 4 + 1), "k.py:9", "other")      # a quarter (+4 B), another site
    with pytest.raises(SbufCapacityError):
        _tile(m, (128, cap // 4 * 3 // 4), "k.py:5", "new")    # 3/4 of SBUF: does not fit even after reclaim
    # the failed allocation must not have freed or poisoned the old instance
    assert old.storage.alloc.live and not old.storage.alloc.superseded
    assert m.sbuf.reclaimed == 0
    assert m.sbuf.used_in(0, 128) == cap // 2 + cap // 4 + 4 and other.storage.alloc.live


def test_failed_psum_allocation_does_not_reclaim_the_previous_instance():
    m = Machine("trn2")
    old = m.new_onchip("psum", (128, 512), np.float32, "old", api="test", loc="k.py:5")      # 1 bank
    keep = [m.new_onchip("psum", (128, 512), np.float32, f"o{i}", api="test", loc=f"k.py:{20 + i}")
            for i in range(7)]
    with pytest.raises(PsumCapacityError):    # 2 banks at the old site: 1 reclaimable bank is not enough
        m.new_onchip("psum", (128, 1024), np.float32, "new", api="test", loc="k.py:5")
    assert old.storage.alloc.live and not old.storage.alloc.superseded
    assert m.psum.banks_used() == 8 and keep


def test_manually_placed_tiles_must_lie_inside_the_memory():
    from trnlab.errors import PartitionError
    m = Machine("trn2")
    cap = m.chip.sbuf_bytes_per_partition
    with pytest.raises(NkiValidationError, match=rf"nl\.ndarray: SBUF tensor 'x' at address {cap - 4}.*"
                                                 rf"limit {cap} B.*At k\.py:1"):
        m.new_onchip("sbuf", (128, 2), np.float32, "x", api="nl.ndarray", loc="k.py:1", address=cap - 4)
    assert not m.sbuf.live                                   # nothing allocated
    with pytest.raises(NkiValidationError, match="PSUM tensor 'p' at address 16384"):
        m.new_onchip("psum", (128, 512), np.float32, "p", api="nl.ndarray", loc="k.py:2", address=8 * 2048)
    assert not m.psum.live
    with pytest.raises(PartitionError, match="start partition -32"):
        m.new_onchip("sbuf", (32, 2), np.float32, "n", api="nl.ndarray", loc="k.py:3", p0=-32)
