"""SBUF spill (CompilerModel.sbuf_spill): compiler-allocated tiles that do not fit SBUF are spilled
to HBM and reloaded before their next use, instead of raising SbufCapacityError.

Oracles: numpy for the values; the spill traffic by hand (tile bytes); its time from the published
DMA constants in docs/calibration.md (trn1: 16 queues x 17 GB/s x the compiled-graph efficiency 1.0 x
c/(c+128), c = contiguous bytes per partition row); victim choices and addresses by hand."""
import dataclasses
import warnings

import numpy as np
import pytest

import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core.compiler import CompilerModel, using
from trnlab.errors import SbufCapacityError, SbufSpillWarning
from trnlab.hw import TRN1
from trnlab.nki.tensor import NkiTensor
from trnlab.runtime import run_kernel

F = 12288                       # fp32 elements per partition: 48 KiB; trn1 SBUF holds 4 (192 KiB)
TILE_BYTES = 128 * F * 4        # 6 MiB


def four_inputs_and_a_sum(x, place=""):
    """Loads 4 tiles of 48 KiB/partition (SBUF full) and needs a fifth for the sum while all are live.
    place: "inputs" puts the 4 loads at kernel-given addresses, "all" the sum too."""
    out = nl.ndarray((128, F), dtype=x.dtype, buffer=nl.shared_hbm)
    a = []
    for i in range(4):
        t = nl.ndarray((128, F), dtype=x.dtype, buffer=nl.sbuf, name=f"in{i}",
                       address=(0, i * F * 4) if place else None)
        nisa.dma_copy(dst=t, src=x[i])
        a.append(t)
    s = nl.ndarray((128, F), dtype=x.dtype, buffer=nl.sbuf, name="acc", address=(0, 0) if place == "all" else None)
    nisa.tensor_tensor(dst=s, data1=a[1], data2=a[2], op=nl.add)
    nisa.tensor_tensor(dst=s, data1=s, data2=a[3], op=nl.add)
    nisa.tensor_tensor(dst=s, data1=s, data2=a[0], op=nl.add)     # in0 (least recently used) is needed again
    nisa.dma_copy(dst=out, src=s)
    return out


# operand_reuse off: with it the sum takes the bytes of in1 (read for the last time by the first add) and the
# kernel fits (tests/test_core_compiler_operand_reuse.py); these tests need the fifth tile
NO_REUSE = CompilerModel(operand_reuse=False)


def _run(target="trn1", model=NO_REUSE, trace=False, **kwargs):
    x = np.random.default_rng(0).random((4, 128, F), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught, using(model):
        warnings.simplefilter("always")
        run = run_kernel(four_inputs_and_a_sum, (x,), kwargs, target=target, tensor_class=NkiTensor, trace=trace)
    np.testing.assert_array_equal(run.outputs, x[1] + x[2] + x[3] + x[0])
    return run, [w for w in caught if issubclass(w.category, SbufSpillWarning)]


def test_spill_keeps_values_exact_and_warns_once_naming_the_tile():
    run, spills = _run()
    assert len(spills) == 1
    msg = str(spills[0].message)
    # in0 is the least recently used tile when acc is allocated: spilled once, reloaded once
    assert "'in0' [128,12288] float32" in msg and f"{TILE_BYTES} B" in msg and "test_core_compiler_spill.py:" in msg
    assert f"{2 * TILE_BYTES} B of spill/reload DMA traffic" in msg
    assert run.machine.stats.spill_bytes == 2 * TILE_BYTES


def test_benchmark_reports_the_spill_traffic():
    from trnlab.timing.benchmark import summarize
    run, _ = _run()
    result = summarize(run)
    assert result.spill_bytes == 2 * TILE_BYTES and result.as_dict()["spill_bytes"] == 2 * TILE_BYTES
    assert "SBUF spill" in str(result)


def test_spill_costs_its_traffic_at_dma_speed():
    spilled, _ = _run()
    roomy, warned = _run(target=dataclasses.replace(TRN1, sbuf_bytes_per_partition=2 * 192 * 1024))
    assert not warned and roomy.machine.stats.spill_bytes == 0
    row = F * 4
    # the compiler's spill DMAs run at the compiled-graph efficiency (TRN1.graph_dma_efficiency, 1.0),
    # not the kernel loads' 0.44: DMAG's 17 B/ns per queue, 128 B of overhead per 48 KiB descriptor
    rate = 16 * 17e9 * 1.0 * row / (row + 128)              # B/s over the 16 queues
    traffic_s = 2 * TILE_BYTES / rate                       # one spill store + one reload, ~46 us
    extra = spilled.machine.scheduler.end - roomy.machine.scheduler.end
    # both DMAs sit on the critical path (the sum waits for the store, then for the reload); their
    # start latencies and the lost overlap of the first add with the last load come on top
    assert traffic_s <= extra <= 1.3 * traffic_s


def test_switch_off_keeps_the_capacity_error():
    with pytest.raises(SbufCapacityError, match="'acc'"):
        _run(model=dataclasses.replace(NO_REUSE, sbuf_spill=False))


@pytest.mark.parametrize("place", ["inputs", "all"])
def test_kernels_placing_tiles_themselves_keep_the_capacity_error(place):
    with pytest.raises(SbufCapacityError):
        _run(place=place)


def test_a_kernel_that_fits_after_freeing_dead_tiles_does_not_spill():
    def dead_tiles_held(x):
        out = nl.ndarray((128, F), dtype=x.dtype, buffer=nl.shared_hbm)
        held = []                           # the Python list keeps dead tiles referenced
        for i in range(5):
            t = nl.ndarray((128, F), dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=t, src=x[i % 4])
            nisa.dma_copy(dst=out, src=t)
            held.append(t)
        return out

    x = np.random.default_rng(1).random((4, 128, F), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SbufSpillWarning)
        run = run_kernel(dead_tiles_held, (x,), {}, target="trn1", tensor_class=NkiTensor)
    assert run.machine.stats.spill_bytes == 0
    np.testing.assert_array_equal(run.outputs, x[0])


def test_victims_are_least_recently_used_and_never_pinned():
    from trnlab.core.memory import OnChipMemory
    mem = OnChipMemory(partitions=128, bytes_per_partition=4096, target="test", spill=True)
    tiles = [mem.allocate(name=f"t{i}", shape=(128, 256), dtype_name="float32", p0=0, nparts=128,
                          nbytes=1024, loc=f"k.py:{i}", api="test") for i in range(4)]    # SBUF full
    for tile, last_use in zip(tiles, (5, 1, 7, 3)):
        tile.last_use = last_use
    # t1 (used at 1) is the least recently used, but pinned (an operand of the instruction): t3 goes
    victims = mem.spill_victims(0, 128, 1024, pinned={tiles[1].uid})
    assert [v.name for v in victims] == ["t3"] and tiles[3].spilled and tiles[3].uid not in mem.live
    # 1 KiB is free now; room for 3 KiB needs the next two by age, t1 then t0
    victims = mem.spill_victims(0, 128, 3072, pinned=set())
    assert [v.name for v in victims] == ["t1", "t0"]
    # more than all unpinned tiles can free: nothing is evicted
    assert mem.spill_victims(0, 128, 4096, pinned={tiles[2].uid}) == [] and tiles[2].uid in mem.live


# --- victim choice: furthest next use (whole program known) vs least recently used -----------------
TWO_TILES = dataclasses.replace(TRN1, sbuf_bytes_per_partition=2 * F * 4)     # room for 2 tiles of 48 KiB


def _tile(name):
    return nl.ndarray((128, F), dtype=nl.float32, buffer=nl.sbuf, name=name)


def one_hot_two_cold(x):
    """A is used in every step; B is loaded early and needed only at the end; C only in the middle.
    Instruction indices: 0 load A, 1 load B, [C allocated: SBUF full] 2 load C, 3 A+=C, 4 A+=C,
    5 A+=B, 6 store A."""
    out = nl.ndarray((128, F), dtype=x.dtype, buffer=nl.shared_hbm)
    a, b = _tile("A"), _tile("B")
    nisa.dma_copy(dst=a, src=x[0])
    nisa.dma_copy(dst=b, src=x[1])
    c = _tile("C")
    nisa.dma_copy(dst=c, src=x[2])
    nisa.tensor_tensor(dst=a, data1=a, data2=c, op=nl.add)
    nisa.tensor_tensor(dst=a, data1=a, data2=c, op=nl.add)
    nisa.tensor_tensor(dst=a, data1=a, data2=b, op=nl.add)
    nisa.dma_copy(dst=out, src=a)
    return out


def _run_two_tiles(kernel, machine=None):
    x = np.random.default_rng(2).random((3, 128, F), dtype=np.float32)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        run = run_kernel(kernel, (x,), {}, target=TWO_TILES, tensor_class=NkiTensor, machine=machine,
                         timing=machine is None)
    return run, x


def test_victim_is_the_tile_needed_furthest_in_the_future():
    run, x = _run_two_tiles(one_hot_two_cold)
    np.testing.assert_array_equal(run.outputs, x[0] + x[2] + x[2] + x[1])
    # C's allocation finds A (next use: instruction 3) and B (next use: 5): B goes. B is stored once and
    # reloaded once at instruction 5, when C is dead (last use 4): 2 tile transfers. (LRU would evict
    # A, least recently used, whose reload at 3 then evicts B: 2 stores + 2 reloads.)
    assert [a.name for a in run.machine.stats.spilled.values()] == ["B"]
    assert run.machine.stats.spill_bytes == 2 * TILE_BYTES


def test_without_the_probe_victims_are_least_recently_used():
    from trnlab.core.machine import Machine
    machine = Machine(TWO_TILES, tensor_class=NkiTensor, spill=True)     # no liveness: LRU fallback
    run, x = _run_two_tiles(one_hot_two_cold, machine)
    np.testing.assert_array_equal(run.outputs, x[0] + x[2] + x[2] + x[1])
    # C evicts A (store A); instruction 3 reloads A evicting B (store B); instruction 5 reloads B
    # evicting C (store C: Python still holds it, nothing frees it at its last use): 3 stores, 2 reloads
    assert sorted(a.name for a in run.machine.stats.spilled.values()) == ["A", "B", "C"]
    assert run.machine.stats.spill_bytes == 5 * TILE_BYTES


def clean_copy_evicted_again(x):
    """Instructions: 0 load A, 1 load B, [C allocated] 2 load C, 3 C=A+C, 4 C+=B, 5 C+=A, 6 C+=B,
    7 store C. A and B are only read after their loads."""
    out = nl.ndarray((128, F), dtype=x.dtype, buffer=nl.shared_hbm)
    a, b = _tile("A"), _tile("B")
    nisa.dma_copy(dst=a, src=x[0])
    nisa.dma_copy(dst=b, src=x[1])
    c = _tile("C")
    nisa.dma_copy(dst=c, src=x[2])
    for other in (a, b, a, b):
        nisa.tensor_tensor(dst=c, data1=c, data2=other, op=nl.add)
    nisa.dma_copy(dst=out, src=c)
    return out


def test_a_reloaded_tile_not_written_since_is_evicted_without_a_store():
    run, x = _run_two_tiles(clean_copy_evicted_again)
    np.testing.assert_array_equal(run.outputs, x[2] + x[0] + x[1] + x[0] + x[1])
    # C's allocation evicts B (next use 4 > A's 3): store B. 4: reload B, evicting A: store A.
    # 5: reload A, evicting B, whose HBM copy is still valid: no store. 6: reload B (A is dead after 5).
    # 2 stores + 3 reloads (storing B again would make 6).
    assert run.machine.stats.spill_bytes == 5 * TILE_BYTES


def never_written_when_evicted(x):
    """Instructions: 0 load A, [B allocated, not written; C allocated: SBUF full] 1 load C, 2 A+=C,
    3 load B, 4 B+=A, 5 store B."""
    out = nl.ndarray((128, F), dtype=x.dtype, buffer=nl.shared_hbm)
    a = _tile("A")
    nisa.dma_copy(dst=a, src=x[0])
    b, c = _tile("B"), _tile("C")
    nisa.dma_copy(dst=c, src=x[1])
    nisa.tensor_tensor(dst=a, data1=a, data2=c, op=nl.add)
    nisa.dma_copy(dst=b, src=x[2])
    nisa.tensor_tensor(dst=b, data1=b, data2=a, op=nl.add)
    nisa.dma_copy(dst=out, src=b)
    return out


def test_a_tile_evicted_before_its_first_write_moves_no_bytes():
    run, x = _run_two_tiles(never_written_when_evicted)
    np.testing.assert_array_equal(run.outputs, x[2] + (x[0] + x[1]))
    # C's allocation evicts B (next use 3, A's is 2): B holds no data, so neither a store nor a reload
    assert [a.name for a in run.machine.stats.spilled.values()] == ["B"]
    assert run.machine.stats.spill_bytes == 0


def test_furthest_next_use_first_and_dead_tiles_freed_without_a_spill():
    from trnlab.core.memory import OnChipMemory
    mem = OnChipMemory(partitions=128, bytes_per_partition=4096, target="test", spill=True)
    tiles = [mem.allocate(name=f"t{i}", shape=(128, 256), dtype_name="float32", p0=0, nparts=128,
                          nbytes=1024, loc=f"k.py:{i}", api="test") for i in range(4)]    # SBUF full
    nxt = {tiles[0].uid: 9, tiles[1].uid: 4, tiles[2].uid: None, tiles[3].uid: 7}
    mem.next_use = lambda a: nxt[a.uid]
    # t2 is never used again: freed (not spilled); then t0 (next use 9) is the furthest
    victims = mem.spill_victims(0, 128, 2048, pinned=set())
    assert [v.name for v in victims] == ["t0"] and tiles[0].spilled
    assert not tiles[2].live and not tiles[2].spilled and tiles[2].uid not in mem.spilled
    # t0 pinned does not matter now (already out); next furthest of t1 (4), t3 (7): t3
    assert [v.name for v in mem.spill_victims(0, 128, 3072, pinned=set())] == ["t3"]


def _full_tile(mem, name, nbytes=1024, nparts=128, data=True, dirty=True):
    a = mem.allocate(name=name, shape=(nparts, nbytes // 4), dtype_name="float32", p0=0, nparts=nparts,
                     nbytes=nbytes, loc=f"k.py:{name}", api="test")
    a.has_data, a.dirty = data, dirty
    return a


def test_victims_weigh_next_use_by_the_bytes_the_eviction_moves():
    from trnlab.core.memory import OnChipMemory
    mem = OnChipMemory(partitions=128, bytes_per_partition=4096, target="test", spill=True)
    a = _full_tile(mem, "A")                        # written: a store and a reload, 2 x 128 KiB
    b = _full_tile(mem, "B", dirty=False)           # clean (reloaded, not written since): a reload only
    c = _full_tile(mem, "C")
    row = _full_tile(mem, "R", nparts=1)            # one partition: partition 0 is now full
    nxt = {a.uid: 10, b.uid: 8, c.uid: 12, row.uid: 2}
    mem.next_use = lambda t: nxt[t.uid]
    # only partition 0 is short: the row (2 x 1 KiB of DMA) goes although it is needed soonest
    # (Belady alone would evict C, next use 12, and move 256 KiB)
    assert [v.name for v in mem.spill_victims(0, 128, 1024, pinned=set())] == ["R"]
    d = _full_tile(mem, "D")                        # where R was, on every partition: all full now
    nxt[d.uid] = 1
    # every partition full: the clean tile B (8 uses away per 128 KiB) before A (10 per 256 KiB) and
    # C (12 per 256 KiB)
    assert [v.name for v in mem.spill_victims(0, 128, 1024, pinned=set())] == ["B"]


def test_a_reloaded_tile_takes_a_free_address_not_its_old_one():
    from trnlab.core.memory import OnChipMemory
    mem = OnChipMemory(partitions=128, bytes_per_partition=4096, target="test", spill=True)
    tiles = [_full_tile(mem, f"t{i}") for i in range(4)]            # bytes [0,1K) .. [3K,4K)
    nxt = {t.uid: 5 + i for i, t in enumerate(tiles)}
    mem.next_use = lambda t: nxt.get(t.uid, 1)
    assert [v.name for v in mem.spill_victims(0, 128, 1024, pinned=set())] == ["t3"]
    new = _full_tile(mem, "new")                                     # takes t3's old bytes
    assert new.b0 == 3072
    mem.free(tiles[1].uid)                                           # [1K, 2K) is free now
    assert mem.reload(tiles[3], pinned=set()) == []
    assert tiles[3].b0 == 1024 and not tiles[3].spilled
    live = sorted((t.b0, t.b0 + t.nbytes) for t in mem.live.values())
    assert all(hi <= lo for (_, hi), (lo, _) in zip(live, live[1:]))   # no two live tiles overlap


def test_the_instruction_after_a_reload_to_a_new_address_waits_for_it():
    # in0 is evicted when acc is allocated and acc takes its bytes; in0 comes back where in1 was (dead)
    run, _ = _run(trace=True)
    events = run.machine.scheduler.records
    reload = [e for e in events if e.api == "neuronx-cc reload"]
    assert reload
    last_add = max((e for e in events if e.name == "tensor_tensor"), key=lambda e: e.index)
    # the add reads in0 through the kernel's own (older) view of it: it must see the new address
    assert last_add.start >= max(e.end for e in reload) - 1e-12
