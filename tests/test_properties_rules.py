"""Property tests of the hardware rules: over random sizes, each rule rejects exactly what the documented
limit says and accepts the rest. The expected verdict is computed here from the published numbers
(nki-semantics.md / the ISA docs), independently of the checks in trnlab.isa."""
import numpy as np
from hypothesis import given, settings, strategies as st, HealthCheck

import trnlab.isa as I
from trnlab.core import dtypes as dt
from trnlab.core.machine import Machine
from trnlab.errors import (MatmulLimitError, OutOfBoundsError, PartitionError, PsumCapacityError, SbufCapacityError,
                           ShapeError, TrnlabError)

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # examples: conftest profiles
LOC = "kernel.py:7"
TARGETS = st.sampled_from(["trn1", "trn2", "trn3"])
SBUF_KIB = {"trn1": 192, "trn2": 224, "trn3": 256}          # per partition (ARCH v2/v3/v4)


def tile(m, shape, dtype=dt.float32, kind="sbuf", name="t", p0=0):
    return m.new_onchip(kind, shape, dtype, name, api="test", loc="alloc:1", fill=0.0, p0=p0)


def verdict(fn) -> "type | None":
    """None if fn() is accepted, else the TrnlabError subclass it raised."""
    try:
        fn()
    except TrnlabError as exc:
        return type(exc)
    return None


@SETTINGS
@given(p=st.integers(1, 256), target=TARGETS)
def test_partition_dim_limit(p, target):
    """On-chip tiles have at most 128 partitions."""
    m = Machine(target)
    got = verdict(lambda: tile(m, (p, 4)))
    assert got == (None if p <= 128 else PartitionError)


@SETTINGS
@given(start=st.integers(0, 127), count=st.integers(1, 128))
def test_start_partition_rule(start, count):
    """Engine accesses start at partition 0 (any count), 0/64 (<= 64 partitions) or 0/32/64/96 (<= 32)."""
    if start + count > 128:
        count = 128 - start
    m = Machine("trn2")
    src = tile(m, (128, 8), name="base").index((slice(start, start + count),))
    dst = tile(m, (count, 8), name="dst")
    ok = start == 0 or (count <= 64 and start == 64) or (count <= 32 and start in (32, 64, 96))
    got = verdict(lambda: m.issue(I.TensorCopy(api="nisa.tensor_copy", loc=LOC, dst=dst, src=src)))
    assert got == (None if ok else PartitionError)


@SETTINGS
@given(k=st.integers(1, 160), mm=st.integers(1, 160), n=st.integers(1, 600),
       target=st.sampled_from(["trn1", "trn2"]))
def test_matmul_k_m_n_limits(k, mm, n, target):
    """nc_matmul: K <= 128 (partitions), M <= 128 (stationary free), N <= 512 (moving free, one PSUM
    bank of fp32 on v2/v3)."""
    m = Machine(target)
    kk = min(k, 128)                                   # the tiles themselves cannot exceed 128 partitions
    stat = tile(m, (kk, mm), dt.bfloat16, name="stat")
    mov = tile(m, (kk, n), dt.bfloat16, name="mov")
    acc = tile(m, (min(mm, 128), 2048 // 4 * 2), kind="psum", name="acc")     # two banks
    dst = acc.index((slice(None), slice(0, n))) if mm <= 128 else acc
    ok = mm <= 128 and n <= 512
    got = verdict(lambda: m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=dst, stationary=stat, moving=mov)))
    if ok:
        assert got is None
    else:
        assert got in (MatmulLimitError, ShapeError)


@SETTINGS
@given(offset=st.integers(0, 511), n=st.integers(1, 512))
def test_matmul_result_fits_one_psum_bank(offset, n):
    """A matmul result may not cross a 2 KiB PSUM bank (v2/v3)."""
    m = Machine("trn2")
    acc = tile(m, (64, 1024), kind="psum", name="acc")               # two fp32 banks
    dst = acc.index((slice(None), slice(offset, offset + n)))
    stat = tile(m, (64, 64), dt.bfloat16, name="stat")
    mov = tile(m, (64, n), dt.bfloat16, name="mov")
    ok = (offset * 4) // 2048 == ((offset + n) * 4 - 1) // 2048
    got = verdict(lambda: m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=dst, stationary=stat, moving=mov)))
    assert got == (None if ok else MatmulLimitError)


@SETTINGS
@given(sizes=st.lists(st.integers(1, 96), min_size=1, max_size=6), target=TARGETS)
def test_sbuf_capacity(sizes, target):
    """Live SBUF tiles share SBUF_KIB per partition; the allocation that exceeds it raises and names
    the largest live tiles."""
    m = Machine(target)
    live, used = [], 0
    for i, kib in enumerate(sizes):
        nbytes = kib * 1024
        got = verdict(lambda: live.append(tile(m, (128, nbytes // 4), name=f"t{i}")))
        fits = used + nbytes <= SBUF_KIB[target] * 1024
        assert got == (None if fits else SbufCapacityError)
        if fits:
            used += nbytes
        else:
            return


@SETTINGS
@given(banks=st.lists(st.integers(1, 4), min_size=1, max_size=6))
def test_psum_capacity_in_banks(banks):
    """PSUM holds 8 banks of 2 KiB per partition; a tile takes whole banks."""
    m = Machine("trn2")
    live, used = [], 0
    for i, b in enumerate(banks):
        free = b * 512 - (1 if b > 1 else 0)            # fp32 elements: rounds up to b banks
        got = verdict(lambda: live.append(tile(m, (128, free), kind="psum", name=f"p{i}")))
        fits = used + b <= 8
        assert got == (None if fits else PsumCapacityError)
        if not fits:
            return
        used += b


@SETTINGS
@given(rows=st.integers(1, 16), cols=st.integers(1, 16), r0=st.integers(0, 20), c0=st.integers(0, 20),
       nr=st.integers(1, 8), nc=st.integers(1, 8))
def test_static_out_of_bounds_indexing(rows, cols, r0, c0, nr, nc):
    """An index range reaching past a tensor is an error, never a silent clip (numpy would clip).
    (Negative bounds count from the end, as in Python.)"""
    m = Machine("trn2")
    h = m.hbm_tensor(np.zeros((rows, cols), np.float32), "h")
    inside = r0 + nr <= rows and c0 + nc <= cols
    got = verdict(lambda: h.index((slice(r0, r0 + nr), slice(c0, c0 + nc))))
    assert got == (None if inside else OutOfBoundsError)
