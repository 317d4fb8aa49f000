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


def test_used_in_and_banks_used_match_a_per_partition_recount_after_random_allocations_and_frees():
    """used_in's one-pass shortcut (no tile starting inside the range) and banks_used's one-bank shortcut
    agree with a brute-force recount: bytes summed per partition, banks listed per tile."""
    from trnlab.core.memory import OnChipMemory, PsumMemory
    rng = np.random.default_rng(7)
    sbuf = OnChipMemory(partitions=128, bytes_per_partition=1 << 20, target="test", rotate=3)
    psum = PsumMemory(partitions=128, banks=64, bank_bytes=2048, target="test", rotate=2)
    for step in range(400):
        if sbuf.live and rng.random() < 0.4:
            sbuf.free(int(rng.choice(list(sbuf.live))))
        else:
            p0 = int(rng.choice([0, 0, 0, 32, 64, int(rng.integers(0, 128))]))
            sbuf.allocate(name=f"s{step}", shape=(1, 1), dtype_name="float32", p0=p0,
                          nparts=int(rng.integers(1, 129 - p0)), nbytes=int(rng.integers(1, 5000)),
                          loc=f"site{step % 5}", api="test")
        p0 = int(rng.integers(0, 128))
        p1 = int(rng.integers(p0 + 1, 129))
        per_partition = [sum(a.nbytes for a in sbuf.live.values() if a.p0 <= p < a.p1) for p in range(p0, p1)]
        assert sbuf.used_in(p0, p1) == max(per_partition)
        if psum.live and rng.random() < 0.4:
            psum.free(int(rng.choice(list(psum.live))))
        elif len(psum.live) < 16:
            address = int(rng.integers(0, 60)) * 2048 if rng.random() < 0.2 else None
            psum.allocate(name=f"p{step}", shape=(1, 1), dtype_name="float32", p0=0, nparts=128,
                          nbytes=int(rng.choice([4, 2048, 2049, 4096, 6000])), loc=f"site{step % 3}",
                          api="test", address=address)
        banks = {b for a in psum.live.values() for b in range(a.b0 // 2048, (a.b0 + a.nbytes + 2047) // 2048)}
        assert psum.banks_used() == len(banks)
