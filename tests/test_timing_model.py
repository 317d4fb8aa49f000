"""Timing model: hand-computed latencies of single instructions and small dependency chains.

Every expected value is written out from the documented formula and the published constants, as literals
(trainium-hardware.md §2-3): cycles at the engine clock, the ~60-cycle result latency between
dependent instructions, LoadStationary overlap, DMA fixed latency + bytes / queue rate.
"""
import ml_dtypes
import numpy as np
import pytest

import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core.machine import Machine, running
from trnlab.nki.tensor import NkiTensor
from trnlab.runtime import timing_model

# trn1 (NC-v2) engine clocks from the architecture guide's datapath table, written out here rather than
# read from the chip preset, so that a wrong preset fails these tests
VEC = 1.12e9                             # Vector Engine
ACT = 1.4e9                              # Scalar Engine
PE = 2.8e9                               # Tensor Engine
LAT = 60                                 # ~60 cycles to start an SBUF/PSUM access (NC-v2 guide)
# DMA model constants (trainium-hardware.md §DMA): ~1.3 us fixed cost per DMA, 17 B/ns per queue (DMA
# bandwidth guide, TRN1), and the two fitted constants of the efficiency curve c / (c + 128) x 0.44
DMA_FIXED_S = 1.3e-6
DMA_QUEUE_BYTES_PER_S = 17e9
DMA_EFFICIENCY, DMA_CHUNK_OVERHEAD = 0.44, 128


def machine(target="trn1", trace=False):
    return Machine(target, numerics=False, scheduler=timing_model(trace=trace), tensor_class=NkiTensor)


def sbuf(shape, dtype=nl.float32):
    return nl.ndarray(shape, dtype=dtype, buffer=nl.sbuf)


def test_single_vector_copy_costs_n_cycles():
    m = machine()
    with running(m):
        a, b = sbuf((128, 512)), sbuf((128, 512))
        nisa.tensor_copy(dst=b, src=a)
    # ISA tensor_copy: max(MIN_II=64, N=512) Vector cycles at 1.12 GHz
    assert m.scheduler.end == pytest.approx(512 / VEC, rel=1e-9)


def test_tiny_instruction_pays_min_ii():
    m = machine()
    with running(m):
        a, b = sbuf((128, 8)), sbuf((128, 8))
        nisa.tensor_copy(dst=b, src=a)
    assert m.scheduler.end == pytest.approx(64 / VEC, rel=1e-9)    # max(64, 8)


def test_same_engine_chain_adds_result_latency():
    m = machine()
    with running(m):
        a, b = sbuf((128, 512)), sbuf((128, 512))
        nisa.memset(dst=a, value=0.0)                  # fp32: max(64, N) = 512 cycles
        nisa.tensor_copy(dst=b, src=a)                 # RAW on a: waits for a's result (+60 cycles)
    assert m.scheduler.end == pytest.approx((512 + LAT + 512) / VEC, rel=1e-9)


def test_independent_engines_overlap():
    m = machine()
    with running(m):
        a, b = sbuf((128, 512)), sbuf((128, 512))
        c, d = sbuf((128, 1024)), sbuf((128, 1024))
        nisa.tensor_copy(dst=b, src=a)                            # Vector: 512 cycles @ 1.12 GHz
        nisa.activation(dst=d, op=nl.exp, data=c)                 # Scalar: 1024 cycles @ 1.4 GHz
    vec, act = 512 / VEC, 1024 / ACT
    assert m.scheduler.end == pytest.approx(max(vec, act), rel=1e-9)
    assert m.scheduler.end < vec + act


def test_cross_engine_dependency_serialises():
    m = machine()
    with running(m):
        a, d = sbuf((128, 1024)), sbuf((128, 1024))
        nisa.memset(dst=a, value=1.0)                              # Vector: 1024 cycles
        nisa.activation(dst=d, op=nl.exp, data=a)                  # Scalar waits for a
    expected = (1024 + LAT) / VEC + 1024 / ACT
    assert m.scheduler.end == pytest.approx(expected, rel=1e-9)


def test_disjoint_regions_do_not_serialise():
    m = machine()
    with running(m):
        a, src = sbuf((128, 1024)), sbuf((128, 1024))
        nisa.tensor_copy(dst=a[:, 0:512], src=src[:, 0:512])              # Vector writes left half
        nisa.activation(dst=a[:, 512:1024], op=nl.copy, data=src[:, 512:1024])   # Scalar: right half
        out = sbuf((128, 512))
        nisa.activation(dst=out, op=nl.exp, data=a[:, 512:1024])           # reads only the Scalar half
    # the second activation waits for the first (same engine, RAW +60 Scalar cycles), not for Vector
    expected = (512 + LAT + 512) / ACT
    assert m.scheduler.end == pytest.approx(max(expected, 512 / VEC), rel=1e-9)


def test_partition_disjoint_tiles_do_not_serialise():
    m = machine()
    with running(m):
        a, src = sbuf((128, 512)), sbuf((128, 512))
        nisa.memset(dst=a[0:64, :], value=0.0)                     # Vector, partitions 0-63
        nisa.activation(dst=a[64:128, :], op=nl.exp, data=src[64:128, :])   # Scalar, 64-127: no WAW
    assert m.scheduler.end == pytest.approx(max(512 / VEC, 512 / ACT), rel=1e-9)


def test_war_waits_for_reader():
    m = machine()
    with running(m):
        a, b = sbuf((128, 2048)), sbuf((128, 2048))
        nisa.activation(dst=b, op=nl.exp, data=a)                  # Scalar reads a: 2048 cycles
        nisa.memset(dst=a, value=0.0)                               # Vector overwrites a: WAR
    expected = (2048 + LAT) / ACT + 2048 / VEC
    assert m.scheduler.end == pytest.approx(expected, rel=1e-9)


def _matmuls(m, n, dtype=nl.bfloat16, free=512, stat_free=128):
    with running(m):
        lhs = sbuf((128, stat_free), dtype)
        rhs = sbuf((128, free), dtype)
        outs = [nl.ndarray((stat_free, free), dtype=nl.float32, buffer=nl.psum) for _ in range(2)]
        for i in range(n):
            nisa.nc_matmul(dst=outs[i % 2], stationary=lhs, moving=rhs)


def test_back_to_back_matmuls_hide_load_stationary():
    m = machine()
    _matmuls(m, 4)
    # first LoadStationary exposed (128 / 4 = 32 cycles), then 4 x max(min(64, 128), 512) = 512 cycles
    assert m.scheduler.end == pytest.approx((32 + 4 * 512) / PE, rel=1e-9)


def test_fp32_matmul_is_four_times_slower():
    m = machine()
    _matmuls(m, 2, dtype=nl.float32)
    assert m.scheduler.end == pytest.approx((4 * 32 + 2 * 4 * 512) / PE, rel=1e-9)


def test_short_moving_matmul_pays_min_ii():
    m = machine()
    _matmuls(m, 3, free=16)
    # ISA: max(min(64, N_stat=128), N_mov=16) = 64 cycles each; LS = 32 cycles (hidden after the first)
    assert m.scheduler.end == pytest.approx((32 + 3 * 64) / PE, rel=1e-9)


def test_single_dma_fixed_cost_plus_bandwidth():
    m = machine()
    x = np.zeros((128, 512), ml_dtypes.bfloat16)
    with running(m):
        src = m.hbm_tensor(x, "x")
        t = sbuf((128, 512), nl.bfloat16)
        nisa.dma_copy(dst=t, src=src)
    chunk = 512 * 2                                   # one contiguous 1 KiB row per partition
    eff = DMA_EFFICIENCY * chunk / (chunk + DMA_CHUNK_OVERHEAD)
    per_queue = 128 * 1024 / 16                       # 16 queues x 8 partitions (ARCH v2)
    expected = DMA_FIXED_S + per_queue / (DMA_QUEUE_BYTES_PER_S * eff)
    assert m.scheduler.end == pytest.approx(expected, rel=1e-9)
    assert m.scheduler.work.hbm_bytes == 128 * 1024


def test_small_rows_are_less_efficient():
    def rate(cols):
        m = machine()
        x = np.zeros((128, cols), ml_dtypes.bfloat16)
        with running(m):
            src = m.hbm_tensor(x, "x")
            nisa.dma_copy(dst=sbuf((128, cols), nl.bfloat16), src=src)
        return 128 * cols * 2 / (m.scheduler.end - DMA_FIXED_S)
    assert rate(64) < rate(512) < rate(4096)


def test_dma_then_matmul_chain():
    m = machine()
    x = np.zeros((128, 128), ml_dtypes.bfloat16)
    with running(m):
        src = m.hbm_tensor(x, "x")
        lhs = sbuf((128, 128), nl.bfloat16)
        rhs = sbuf((128, 512), nl.bfloat16)
        nisa.dma_copy(dst=lhs, src=src)
        out = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)
        nisa.nc_matmul(dst=out, stationary=lhs, moving=rhs)
    # the load: 8 partitions x 256-byte rows per queue at the efficiency of 256-byte chunks
    eff = DMA_EFFICIENCY * 256 / (256 + DMA_CHUNK_OVERHEAD)
    dma_end = DMA_FIXED_S + 8 * 256 / (DMA_QUEUE_BYTES_PER_S * eff)
    # the stationary arrives with the DMA; LoadStationary (32 cycles) then MultiplyMoving (512)
    assert m.scheduler.end == pytest.approx(dma_end + (32 + 512) / PE, rel=1e-9)


def test_trn2_tensor_engine_throttles_after_idle():
    m = machine("trn2")
    _matmuls(m, 1)
    # a cold PE starts at 50% speed (power throttle); the model throttles the MultiplyMoving stream
    # (512 cycles at 2.4 GHz x 0.5), LoadStationary (32 cycles) runs at full clock
    hz = 2.4e9                       # NC-v3 Tensor Engine clock
    assert m.scheduler.end == pytest.approx(32 / hz + 512 / (hz * 0.5), rel=1e-9)


def test_trn2_throttle_ramps_to_full_speed():
    m = machine("trn2")
    _matmuls(m, 200)                 # ~43 us of matmuls: ramp (3 us) is a small part
    hz = 2.4e9
    ideal = (32 + 200 * 512) / hz
    assert ideal < m.scheduler.end < ideal + 3e-6      # the ramp lasts ~3 us (neuron-explorer glossary)
