"""Review of the semantics core: regressions for bugs found by reading core/, isa/, timing/.

Each test failed before its fix."""
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core.machine import Machine
from trnlab.errors import HbmCapacityError, NkiValidationError, PsumCapacityError, SbufCapacityError
from trnlab.isa import TensorCopy
from trnlab.timing import Scheduler


def test_hbm_overflow_leaves_the_allocator_consistent_and_names_the_kernel_line():
    m = Machine("trn2")
    limit = m.chip.hbm_bytes_per_core
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(limit + 64,), strides=(0,))
    with pytest.raises(HbmCapacityError, match=r"test_review_core_semantics\.py:\d+"):
        m.hbm_tensor(huge, "huge")
    assert m.hbm_used == 0                    # the failed placement took no space
    m.hbm_tensor(np.ones(16, np.float32), "small")
    assert m.hbm_used == 64


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


def test_write_to_broadcast_view_names_api_and_kernel_line():
    m = Machine("trn2")
    src = _tile(m, (4, 8), "k.py:1", "src")
    src.write(np.ones((4, 8)))
    row = _tile(m, (1, 8), "k.py:2", "row")
    dst = row.broadcast_to((4, 8))
    with pytest.raises(NkiValidationError, match=r"nisa\.tensor_copy.*At kern\.py:42"):
        m.issue(TensorCopy(api="nisa.tensor_copy", loc="kern.py:42", dst=dst, src=src))


def test_nki_precise_fp_0_is_not_silently_ignored(monkeypatch):
    """NKI_PRECISE_FP=0 (AWS's fp32-everywhere mode) is not modelled: only tf32 honoured it before,
    bf16/fp8 kept rounding. A flag trnlab cannot honour must say so."""
    monkeypatch.setenv("NKI_PRECISE_FP", "0")
    with pytest.raises(NotImplementedError, match="NKI_PRECISE_FP"):
        Machine("trn2")


def test_tf32_rounds_on_write():
    from trnlab.core import dtypes as dt
    x = np.array([1.0 + 2 ** -12], dtype=np.float32)       # below tf32's 10-bit mantissa
    assert dt.cast(x, dt.tfloat32)[0] == 1.0


# --- LNC synchronisation is charged in the timing model ------------------------------------------------

@nki.jit
def _skewed_barrier(a):
    """Program 1 does much more work before the barrier; after it, both do one small DMA."""
    scratch = nl.ndarray((2, 32, 16), dtype=a.dtype, buffer=nl.shared_hbm)
    pid = nl.program_id(0)
    t = nl.ndarray((32, 16), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=a[pid])
    if pid == 1:
        for _ in range(40):
            nisa.tensor_scalar(dst=t, data=t, op0=nl.multiply, operand0=1.0)
    nisa.dma_copy(dst=scratch[pid], src=t)
    nisa.core_barrier(scratch, (0, 1))
    other = nl.ndarray((32, 16), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=other, src=scratch[1 - pid])
    return scratch


def test_core_barrier_makes_later_work_wait_for_the_partner():
    a = np.random.default_rng(0).random((2, 32, 16), dtype=np.float32)
    run = _skewed_barrier[2].run((a,), {})
    s0, s1 = (m.scheduler for m in run.machines)
    # program 1 reached the barrier later; program 0's post-barrier DMA cannot start before that.
    assert s0.end == pytest.approx(s1.end, rel=1e-9)
    # by hand (trn2): each [32, 16] fp32 DMA costs ~1.3 us plus 8 partitions x 64 B per queue at
    # 23 B/ns x 0.44 x 64 / (64 + 128); program 1 runs load, 40 dependent tensor_scalar (max(64, 16) Vector
    # cycles each plus the 60-cycle result latency, at 0.96 GHz), store, barrier, load
    dma = 1.3e-6 + 8 * 64 / (23e9 * 0.44 * 64 / (64 + 128))
    assert s1.end == pytest.approx(3 * dma + 40 * (64 + 60) / 0.96e9, rel=1e-9)
    again = _skewed_barrier[2].run((a,), {})          # deterministic, whatever the thread interleaving
    assert [m.scheduler.end for m in again.machines] == [s0.end, s1.end]


def test_scheduler_wait_until_delays_later_instructions():
    m = Machine("trn2", scheduler=Scheduler)
    t = _tile(m, (128, 64), "k.py:1")
    m.scheduler.wait_until(1e-3)
    from trnlab.isa import Memset
    m.issue(Memset(api="nisa.memset", loc="k.py:2", dst=t, value=0.0))
    # the memset starts at the wait: fp32 memset of 64 elements is max(64, N) = 64 Vector cycles at 0.96 GHz
    assert m.scheduler.end == pytest.approx(1e-3 + 64 / 0.96e9, rel=1e-9)


@nki.jit
def _skewed_swap(a):
    """Program 1 is busy before the exchange: program 0's receiving DMA waits for its data."""
    out = nl.ndarray((2, 64, 32), dtype=a.dtype, buffer=nl.shared_hbm)
    pid = nl.program_id(0)
    mine = nl.ndarray((64, 32), dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=mine, src=a[pid])
    if pid == 1:
        for _ in range(40):
            nisa.tensor_scalar(dst=mine, data=mine, op0=nl.multiply, operand0=1.0)
    theirs = nl.ndarray((64, 32), dtype=a.dtype, buffer=nl.sbuf)
    nisa.sendrecv(src=mine, dst=theirs, send_to_rank=1 - pid, recv_from_rank=1 - pid, pipe_id=0)
    return out


def test_sendrecv_receiver_waits_for_the_senders_data():
    a = np.random.default_rng(0).random((2, 64, 32), dtype=np.float32)
    busy = _skewed_swap[2].run((a,), {})
    s0, s1 = (m.scheduler for m in busy.machines)
    pre = [e for e in s1.sites if e[0] == "tensor_scalar"]
    assert len(pre) == 40
    last_ts = max(end for end, site in zip(s1.ends, s1.sites) if site[0] == "tensor_scalar")
    assert s0.end > last_ts                 # program 0's receive finished after program 1's data existed


def test_instruction_with_a_broadcast_second_output_writes_nothing():
    """activation writes dst and reduce_res: a read-only reduce_res must not leave dst half-updated."""
    from trnlab.isa import Activation
    m = Machine("trn2")
    data = _tile(m, (4, 8), "k.py:1", "data")
    data.write(np.ones((4, 8)))
    dst = _tile(m, (4, 8), "k.py:2", "dst")
    dst.write(np.zeros((4, 8)))
    one = _tile(m, (1, 1), "k.py:3", "one")
    res = one.broadcast_to((4, 1))
    with pytest.raises(NkiValidationError, match=r"broadcast view .*At kern\.py:7"):
        m.issue(Activation(api="nisa.activation", loc="kern.py:7", dst=dst, func="exp", data=data,
                           reduce_op="add", reduce_res=res, reduce_cmd="reset_reduce"))
    np.testing.assert_array_equal(dst.array, 0.0)           # untouched
    np.testing.assert_array_equal(m.reduce_regs, 0.0)       # accumulator state untouched too


def test_writes_through_a_bitcast_view_count_as_initialisation():
    """A fp32 tile written through its bf16 bitcast view is initialised (no false uninitialised-read
    report); a bitcast view of never-written memory reports its reads."""
    import warnings
    from trnlab.core import dtypes as dt
    from trnlab.errors import UninitializedReadWarning
    m = Machine("trn2")
    t = _tile(m, (4, 8), "k.py:1")
    halves = t.bitcast(dt.bfloat16)
    assert halves.shape == (4, 16)
    halves.write(np.ones((4, 16), dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.read("test")
    fresh = _tile(m, (4, 8), "k.py:2", "fresh")
    with pytest.warns(UninitializedReadWarning, match="fresh"):
        fresh.bitcast(dt.bfloat16).read("test")
    part = fresh.bitcast(dt.bfloat16).index((slice(None), slice(0, 8)))
    part.write(np.zeros((4, 8), np.float32))
    assert fresh.index((slice(None), slice(0, 4))).is_initialized()
    assert not fresh.index((slice(None), slice(4, 8))).is_initialized()


def test_access_pattern_on_a_bitcast_view_counts_in_the_views_elements():
    from trnlab.core import dtypes as dt
    m = Machine("trn2")
    t = _tile(m, (4, 8), "k.py:1")
    t.write(np.arange(32, dtype=np.float32).reshape(4, 8))
    v = t.bitcast(dt.bfloat16)                       # [4, 16] bf16 halves of the fp32 words
    a = v.ap([[16, 4], [1, 16]])
    assert a.array.dtype == dt.bfloat16 and a.dtype == dt.bfloat16
    np.testing.assert_array_equal(a.array.view(np.uint16), v.array.view(np.uint16))


def test_tensor_scalar_reduce_idle_reduces_without_touching_the_accumulators():
    """reduce_cmd=idle (the NKI 2.30/2.31 default of tensor_scalar_reduce): reduce_res gets this
    instruction's reduction, the Vector accumulator registers keep their value."""
    from trnlab.isa import TensorScalar
    m = Machine("trn2")
    data = _tile(m, (4, 8), "k.py:1", "data")
    x = np.arange(32, dtype=np.float32).reshape(4, 8)
    data.write(x)
    dst, res = _tile(m, (4, 8), "k.py:2", "dst"), _tile(m, (4, 1), "k.py:3", "res")
    m.vector_regs[:] = 7.0
    m.issue(TensorScalar(api="nisa.tensor_scalar_reduce", loc="k.py:4", dst=dst, data=data, op0="multiply",
                         operand0=2.0, accum_op="add", accum_dst=res, reduce_cmd="idle"))
    np.testing.assert_array_equal(res.array[:, 0], (2 * x).sum(axis=1))     # exact: small integers
    np.testing.assert_array_equal(m.vector_regs, 7.0)


def test_memset_rejects_a_value_the_integer_dst_cannot_hold():
    """memset(int8 tile, 300) used to store 300 wrapped to 44 silently."""
    from trnlab.errors import DtypeError
    from trnlab.isa import Memset
    m = Machine("trn2")
    t = m.new_onchip("sbuf", (4, 8), np.int8, "small", api="test", loc="k.py:1")
    with pytest.raises(DtypeError, match=r"nisa\.memset.*300.*8 bits.*'small'.*\[-128, 255\].*At k\.py:2"):
        m.issue(Memset(api="nisa.memset", loc="k.py:2", dst=t, value=300))
    m.issue(Memset(api="nisa.memset", loc="k.py:3", dst=t, value=-128))
    assert (t.array == -128).all()
    u = m.new_onchip("sbuf", (4, 8), np.uint32, "u", api="test", loc="k.py:4")
    m.issue(Memset(api="nisa.memset", loc="k.py:5", dst=u, value=-1))      # all-ones bit pattern stays legal
    assert (u.array == 0xFFFFFFFF).all()


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


def test_view_errors_name_the_kernel_line():
    from trnlab.errors import OutOfBoundsError, ShapeError
    m = Machine("trn2")
    t = _tile(m, (4, 8), "k.py:1")
    with pytest.raises(ShapeError, match=r"reshape: .*At .*test_review_core_semantics\.py:\d+"):
        t.reshape(4, 9)
    with pytest.raises(OutOfBoundsError, match=r"ap: .*At .*test_review_core_semantics\.py:\d+"):
        t.ap([[8, 4], [1, 9]])
