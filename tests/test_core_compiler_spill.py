"""SBUF spill (CompilerModel.sbuf_spill): compiler-allocated tiles that do not fit SBUF are spilled
to HBM and reloaded before their next use, instead of raising SbufCapacityError.

Oracles: numpy for the values; the spill traffic by hand (tile bytes); its time from the published
DMA constants in docs/calibration.md (trn1: 16 queues x 17 GB/s x efficiency 0.44 x c/(c+128),
c = contiguous bytes per partition row)."""
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


def _run(target="trn1", **kwargs):
    x = np.random.default_rng(0).random((4, 128, F), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = run_kernel(four_inputs_and_a_sum, (x,), kwargs, target=target, tensor_class=NkiTensor)
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
    rate = 16 * 17e9 * 0.44 * row / (row + 128)            # B/s over the 16 queues
    traffic_s = 2 * TILE_BYTES / rate                       # one spill store + one reload, ~105 us
    extra = spilled.machine.scheduler.end - roomy.machine.scheduler.end
    # both DMAs sit on the critical path (the sum waits for the store, then for the reload); their
    # start latencies and the lost overlap of the first add with the last load come on top
    assert traffic_s <= extra <= 1.3 * traffic_s


def test_switch_off_keeps_the_capacity_error():
    with using(CompilerModel(sbuf_spill=False)), pytest.raises(SbufCapacityError, match="'acc'"):
        _run()


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
