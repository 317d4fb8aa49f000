"""Multi-buffering (CompilerModel.multibuffer): tiles of one allocation site rotate through
`multibuffer_depth` addresses, so the load of the next loop iteration does not wait for the compute
of the previous one on the same bytes.

Oracles: the addresses by hand (tile bytes per partition); the latencies from the published DMA and
engine constants in docs/calibration.md (trn1: 16 DMA queues x 17 GB/s x efficiency 0.44 x c/(c+128),
1.3 us DMA start latency; Scalar engine at 1.4 GHz, max(64, N) cycles per activation)."""
import numpy as np
import pytest

import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core.compiler import CompilerModel, using
from trnlab.core.machine import Machine
from trnlab.nki.tensor import NkiTensor
from trnlab.runtime import run_kernel


def _addresses(m, n, *, buffer="sbuf", shape=(128, 1024), keep_previous=False, address=None):
    """b0 of n tiles allocated at one site, each dropped before the next (or kept one step)."""
    out, prev = [], None
    for _ in range(n):
        t = m.new_onchip(buffer, shape, np.float32, "t", api="test", loc="k.py:5", address=address)
        out.append(t.storage.alloc.b0)
        prev = t if keep_previous else None
        del t
    del prev
    return out


def test_sbuf_tiles_of_one_site_rotate_through_depth_buffers():
    m = Machine("trn1", compiler=CompilerModel(multibuffer=True, multibuffer_depth=3))
    row = 1024 * 4                              # [128, 1024] fp32: 4 KiB per partition
    assert _addresses(m, 7) == [0, row, 2 * row, 0, row, 2 * row, 0]


def test_without_multibuffering_a_dead_tile_address_is_reused_at_once():
    m = Machine("trn1", compiler=CompilerModel(multibuffer=False))
    assert _addresses(m, 4) == [0, 0, 0, 0]
    # a tile the kernel still holds while the next is allocated: plain first fit ping-pongs
    m = Machine("trn1", compiler=CompilerModel(multibuffer=False))
    assert _addresses(m, 4, keep_previous=True) == [0, 4096, 0, 4096]


def test_psum_tiles_rotate_through_banks():
    m = Machine("trn2", compiler=CompilerModel(multibuffer=True, multibuffer_depth=4))
    banks = [b0 // 2048 for b0 in _addresses(m, 6, buffer="psum", shape=(128, 512))]   # 1 bank each
    assert banks == [0, 1, 2, 3, 0, 1]


def test_explicit_addresses_are_never_moved():
    m = Machine("trn1", compiler=CompilerModel(multibuffer=True, multibuffer_depth=4))
    assert _addresses(m, 3, address=8192) == [8192, 8192, 8192]


def test_rotation_never_causes_a_capacity_error():
    m = Machine("trn1", compiler=CompilerModel(multibuffer=True, multibuffer_depth=4))
    half = m.chip.sbuf_bytes_per_partition // 2
    # two half-SBUF buffers fit; a third rotation step does not, so it falls back to first fit
    assert _addresses(m, 4, shape=(128, half // 4)) == [0, half, 0, half]


W, ITERS, REPS = 2048, 8, 6         # per iteration: load 1 MiB, 6 activations of 2048 fp32, store 1 MiB


def _step(a, out, i):
    """One iteration's tiles live in this function: they are dead when the next iteration allocates."""
    t = nl.ndarray((128, W), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=a[:, i * W:(i + 1) * W])
    r = nl.ndarray((128, W), dtype=a.dtype, buffer=nl.sbuf)
    for _ in range(REPS):
        nisa.activation(dst=r, op=nl.exp, data=t)
    nisa.dma_copy(dst=out[:, i * W:(i + 1) * W], src=r)


def load_exp_store(a):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    for i in nl.affine_range(ITERS):
        _step(a, out, i)
    return out


def _latency(multibuffer: bool):
    a = np.random.default_rng(0).random((128, ITERS * W), dtype=np.float32)
    with using(CompilerModel(multibuffer=multibuffer)):
        run = run_kernel(load_exp_store, (a,), {}, target="trn1", tensor_class=NkiTensor)
    np.testing.assert_allclose(run.outputs, np.exp(a), rtol=1e-2)
    return run.machine.scheduler.end


def test_multibuffering_overlaps_loads_with_compute():
    row = W * 4                                             # contiguous bytes per partition row
    dma_rate = 16 * 17e9 * 0.44 * row / (row + 128)         # B/s over the 16 queues (docs/calibration.md)
    dma = 2 * 128 * row / dma_rate                          # load + store per iteration
    compute = REPS * W / 1.4e9                              # Scalar: max(64, N) cycles at 1.4 GHz
    fixed = 1.3e-6
    on, off = _latency(True), _latency(False)
    # rotating: the DMA queues stay busy; compute and start latencies show only at the ends
    assert ITERS * dma <= on <= ITERS * dma + compute + 2 * fixed
    # one buffer each: load, compute and store of an iteration run one after the other
    assert off == pytest.approx(ITERS * (dma + compute + 2 * fixed), rel=0.10)
    assert on < 0.75 * off
