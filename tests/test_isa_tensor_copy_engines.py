"""Which engines a compiler-placed tensor_copy may run on (CompilerModel.engine_balance).

ISA tensor_copy doc (Nov 2025): Vector, Scalar or GpSimd; NeuronCore-v2's Scalar Engine copies through an
fp32 cast (so it gives Vector's values when both sides are floats, not for integers); GpSimd cannot reach
PSUM. Oracle: the ISA cost max(MIN_II, N) cycles at each engine's trn1 clock (ARCH v2 datapath table:
Vector 1.12 GHz, Scalar and GpSimd 1.4 GHz), and numpy for values.
"""
import numpy as np
import pytest

import trnlab.nki.language as nl
from trnlab.core.compiler import CompilerModel, using
from trnlab.core.machine import Machine, running
from trnlab.nki.tensor import NkiTensor
from trnlab.runtime import timing_model

VEC, ACT = 1.12e9, 1.4e9
N = 512


def _copies(dtype, buffer, count=4):
    """`count` independent nl.copy of one [128, N] tile on trn1, engine balancing on, timing only."""
    with using(CompilerModel(engine_balance=True)):
        m = Machine("trn1", numerics=False, scheduler=timing_model(trace=True), tensor_class=NkiTensor)
    with running(m):
        x = nl.ndarray((128, N), dtype=dtype, buffer=buffer)
        outs = [nl.copy(x) for _ in range(count)]
    return m, outs


def test_fp32_psum_copies_share_vector_and_scalar_on_trn1():
    m, _ = _copies(nl.float32, nl.psum)
    recs = m.scheduler.records
    # greedy earliest finish: 1 Scalar (ends N/ACT = 0.366 us < N/VEC = 0.457 us), 2 Vector (0.457 us <
    # 2N/ACT = 0.731 us), 3 Scalar (0.731 us < 2N/VEC = 0.914 us), 4 Vector (0.914 us < 3N/ACT = 1.097 us)
    assert [e.track for e in recs] == ["scalar", "vector", "scalar", "vector"]
    for e in recs:
        assert e.end - e.start == pytest.approx(N / (VEC if e.track == "vector" else ACT), rel=1e-9)
    assert "gpsimd" not in {e.track for e in recs}            # PSUM: GpSimd cannot reach it
    assert m.scheduler.end == pytest.approx(2 * N / VEC, rel=1e-9)


def test_integer_copies_never_go_to_the_nc_v2_scalar_engine():
    m, _ = _copies(nl.int32, nl.sbuf)
    tracks = {e.track for e in m.scheduler.records}
    assert "scalar" not in tracks and tracks <= {"vector", "gpsimd"}


def test_balanced_copy_values_are_exact():
    with using(CompilerModel(engine_balance=True)):
        m = Machine("trn1", numerics=True, scheduler=timing_model(trace=True), tensor_class=NkiTensor)
    vals = np.random.default_rng(5).standard_normal((128, N)).astype(np.float32)
    with running(m):
        x = nl.ndarray((128, N), dtype=nl.float32, buffer=nl.psum)
        x.array[...] = vals
        outs = [nl.copy(x) for _ in range(4)]
    assert "scalar" in {e.track for e in m.scheduler.records}
    for o in outs:
        np.testing.assert_array_equal(o.array, vals)
