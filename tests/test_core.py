"""Core layer: tensors, memories, capacity accounting, uninitialised reads."""
import warnings

import ml_dtypes
import numpy as np
import pytest

from trnlab.core.machine import Machine
from trnlab.errors import (OutOfBoundsError, PartitionError, PsumCapacityError, SbufCapacityError, ShapeError,
                           UninitializedReadWarning)
from trnlab.hw import TRN1, TRN2, TRN3, get_chip


def test_presets_have_published_capacities():
    assert TRN1.sbuf_bytes_per_partition == 192 * 1024
    assert TRN2.sbuf_bytes_per_partition == 224 * 1024
    assert TRN3.sbuf_bytes_per_partition == 256 * 1024
    assert TRN2.psum_bytes_per_partition == 16 * 1024
    # 128x128 PEs x 2 FLOP x 2.8 GHz = 91.75 TFLOPS ("92" in the NC-v2 guide)
    assert TRN1.peak_bf16_flops == pytest.approx(91.75e12, rel=1e-3)


@pytest.mark.parametrize("chip,cores,hbm_gib,hbm_bw,bf16_tf,fp8_tf,fp32_tf,clocks,dma_queue", [
    # published per-NeuronCore TensorE TFLOPS (NC-v2/v3/v4 pages: 92 / 79 / 79 bf16, 92 / 158 / 315 fp8,
    # 23 / 20 / 20 fp32), chip HBM (32 / 96 / 144 GiB at 820 GB/s / 2.9 TB/s / 4.9 TB/s), engine clocks
    # (Tensor, Vector, Scalar, GpSimd) and DMA bandwidth-guide queue rates (17 / 23 / 33 B/ns)
    (TRN1, 2, 32, 820e9, 92e12, 92e12, 23e12, (2.8e9, 1.12e9, 1.4e9, 1.4e9), 17e9),
    (TRN2, 8, 96, 2.9e12, 79e12, 158e12, 20e12, (2.4e9, 0.96e9, 1.2e9, 1.2e9), 23e9),
    (TRN3, 8, 144, 4.9e12, 79e12, 315e12, 20e12, (2.4e9, 1.2e9, 1.2e9, 1.2e9), 33e9),
], ids=["trn1", "trn2", "trn3"])
def test_presets_match_published_figures(chip, cores, hbm_gib, hbm_bw, bf16_tf, fp8_tf, fp32_tf, clocks, dma_queue):
    assert chip.cores_per_chip == cores and chip.hbm_bytes == hbm_gib * 2 ** 30 and chip.hbm_bytes_per_s == hbm_bw
    # rounded published figures: within 1% (the docs' own rounding, e.g. 78.6 -> "79")
    assert chip.peak_bf16_flops == pytest.approx(bf16_tf, rel=0.01)
    assert chip.peak_fp8_flops == pytest.approx(fp8_tf, rel=0.01)
    assert chip.peak_fp32_flops == pytest.approx(fp32_tf, rel=0.02)
    assert (chip.tensor_hz, chip.vector_hz, chip.scalar_hz, chip.gpsimd_hz) == clocks
    assert chip.dma_queues == 16 and chip.dma_queue_bytes_per_s == dma_queue
    assert chip.psum_bytes_per_partition == 8 * 2048                  # 8 banks x 2 KiB


def test_target_resolution(monkeypatch):
    monkeypatch.delenv("NEURON_PLATFORM_TARGET_OVERRIDE", raising=False)
    monkeypatch.delenv("NKI_NC_VERSION", raising=False)
    assert get_chip().name == "trn2"
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "gen2")
    assert get_chip().name == "trn1"
    assert get_chip("gen4").name == "trn3"


def test_new_tiles_are_nan_and_reads_are_reported():
    m = Machine("trn2")
    t = m.new_onchip("sbuf", (4, 8), np.float32, "x", api="test", loc="here:1")
    assert np.isnan(t.array).all()
    with pytest.warns(UninitializedReadWarning, match="x"):
        t.read("test", "here:2")
    t.write(np.ones((4, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.read("test")


def test_integer_tiles_hold_sentinel():
    m = Machine("trn2")
    t = m.new_onchip("sbuf", (2, 3), np.int32, "i", api="test", loc="")
    assert (t.array == 4).all()


def test_bf16_write_rounds_to_nearest_even():
    m = Machine("trn2")
    t = m.new_onchip("sbuf", (1, 3), ml_dtypes.bfloat16, "b", api="test", loc="")
    values = np.array([[1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-9]], dtype=np.float32)
    t.write(values)
    np.testing.assert_array_equal(t.array.astype(np.float32), values.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert t.array.astype(np.float32)[0, 0] == 1.0          # tie rounds to even


def test_fp8_e4m3_is_legacy_max_240():
    m = Machine("trn2")
    t = m.new_onchip("sbuf", (1, 1), "float8_e4m3", "f", api="test", loc="")
    t.write(np.array([[240.0]]))
    assert float(t.array.astype(np.float32)[0, 0]) == 240.0
    assert t.dtype == np.dtype(ml_dtypes.float8_e4m3)


def test_partition_limit():
    m = Machine("trn2")
    with pytest.raises(PartitionError, match="256.*128"):
        m.new_onchip("sbuf", (256, 4), np.float32, "big", api="nl.ndarray", loc="k.py:3")


def test_rank_one_on_chip_rejected():
    m = Machine("trn2")
    with pytest.raises(ShapeError, match="Insufficient rank"):
        m.new_onchip("sbuf", (128,), np.float32, "v", api="nl.ndarray", loc="k.py:3")


def test_sbuf_capacity_names_largest_tiles():
    m = Machine("trn1")
    keep = [m.new_onchip("sbuf", (128, 16384), np.float32, f"a{i}", api="nl.ndarray", loc=f"k.py:{i}")
            for i in range(2)]                               # 2 x 64 KiB of 192 KiB
    with pytest.raises(SbufCapacityError) as err:
        m.new_onchip("sbuf", (128, 24576), np.float32, "too_big", api="nl.ndarray", loc="k.py:9")
    msg = str(err.value)
    assert "too_big" in msg and "196608" in msg and "'a0'" in msg and "k.py:9" in msg
    assert err.value.limit == 192 * 1024 and err.value.required == 2 * 65536 + 98304
    del keep


def test_sbuf_space_is_freed_with_the_tile():
    m = Machine("trn1")
    for _ in range(10):   # two generations (80000 B each) are live at once: old one dropped on rebinding
        t = m.new_onchip("sbuf", (128, 20000), np.float32, "t", api="nl.ndarray", loc="")
    assert len(m.sbuf.live) == 1
    del t
    assert len(m.sbuf.live) == 0


def test_psum_banks():
    m = Machine("trn2")
    tiles = [m.new_onchip("psum", (128, 512), np.float32, f"p{i}", api="nl.ndarray", loc="") for i in range(8)]
    with pytest.raises(PsumCapacityError, match="8 banks"):
        m.new_onchip("psum", (128, 128), np.float32, "p8", api="nl.ndarray", loc="")
    del tiles


def test_views_share_storage_and_check_bounds():
    m = Machine("trn2")
    t = m.hbm_tensor(np.arange(64, dtype=np.float32).reshape(8, 8), "x")
    v = t.index((slice(2, 4), slice(0, 8, 2)))
    np.testing.assert_array_equal(v.array, np.arange(64).reshape(8, 8)[2:4, ::2])
    with pytest.raises(OutOfBoundsError, match="dimension 1.*8"):
        t.index((slice(0, 2), slice(0, 9)))


def test_region_reports_partitions_and_bytes():
    m = Machine("trn2")
    t = m.new_onchip("sbuf", (128, 64), np.float32, "t", api="nl.ndarray", loc="")
    p0, p1, b0, b1 = t.index((slice(32, 64), slice(16, 32))).region()
    base = t.storage.alloc.b0
    assert (p0, p1, b0 - base, b1 - base) == (32, 64, 64, 128)


def _loop_kernel(m, n_iter, keep_previous):
    """Allocate a 100 KiB/partition tile per iteration at one site; optionally use the previous one."""
    from trnlab.isa.instructions import TensorCopy
    prev = cur = None
    for i in range(n_iter):
        prev, cur = cur, m.new_onchip("sbuf", (128, 25600), np.float32, "blk", api="nl.ndarray", loc="k.py:7")
        cur.write(np.zeros(cur.shape))
        if keep_previous and prev is not None:
            m.issue(TensorCopy(api="nisa.tensor_copy", loc="k.py:9", dst=cur, src=prev))


def test_loop_scoped_tile_is_reclaimed_when_its_site_runs_again():
    # trn1: 192 KiB per partition; two 100 KiB instances do not fit, but the previous iteration's
    # instance is dead once the allocation site runs again (NKI loop scoping), as the compiler sees it.
    m = Machine("trn1")
    _loop_kernel(m, 4, keep_previous=False)
    assert m.sbuf.reclaimed == 3


def test_reclaimed_tile_used_again_is_a_capacity_error():
    m = Machine("trn1")
    with pytest.raises(SbufCapacityError, match="still used after a newer instance.*k.py:9"):
        _loop_kernel(m, 3, keep_previous=True)
