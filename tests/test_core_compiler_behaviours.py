"""Compiler model behaviours that change time but never values: PSUM zero folding and engine balancing.

Oracles: numpy for values, and latencies written out from the ISA cost formula max(MIN_II, N) cycles at
each engine's clock (trn1 datapath table: Vector 1.12 GHz, Scalar and GpSimd 1.4 GHz), never from the
scheduler's own code.
"""
import ml_dtypes
import numpy as np
import pytest

import trnlab.nki.isa as nisa2
import trnlab.nki.language as nl2
import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.isa as nisa
import trnlab.nki_beta1.language as nl
from trnlab.core.compiler import CompilerModel, using
from trnlab.core.machine import Machine, running
from trnlab.nki.tensor import NkiTensor
from trnlab.runtime import timing_model

VEC, ACT, POOL = 1.12e9, 1.4e9, 1.4e9      # trn1 Vector, Scalar, GpSimd clocks (ARCH v2 datapath table)
OFF = CompilerModel.parse("none")


def model(**on) -> CompilerModel:
    return CompilerModel(**{**{f: False for f in ("psum_zero_fold", "multibuffer", "engine_balance",
                                                    "sbuf_spill")}, **on})


def engine_events(run, name=None):
    return [e for e in run.machine.scheduler.records
            if e.track in ("vector", "scalar", "gpsimd", "tensor") and (name is None or e.name == name)]


# --- PSUM zero folding ----------------------------------------------------------------------------------
# The AWS matmul tutorial's shape in miniature: operands loaded once, then per 512-column output tile an
# nl.zeros PSUM accumulator, a k loop of `res += nl.matmul(...)`, and an nl.copy out of PSUM.
@nki.jit
def tiled_matmul(lhsT, rhs):
    K, M = lhsT.shape
    _, N = rhs.shape
    out = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.shared_hbm)
    a = nl.ndarray((K // 128, nl.par_dim(128), M), dtype=lhsT.dtype, buffer=nl.sbuf)
    b = nl.ndarray((K // 128, nl.par_dim(128), N), dtype=rhs.dtype, buffer=nl.sbuf)
    for k in nl.affine_range(K // 128):
        a[k] = nl.load(lhsT[k * 128:(k + 1) * 128, :])
        b[k] = nl.load(rhs[k * 128:(k + 1) * 128, :])
    r = nl.ndarray((nl.par_dim(128), N), dtype=nl.float32, buffer=nl.sbuf)
    for n in nl.affine_range(N // 512):
        res = nl.zeros((128, 512), nl.float32, buffer=nl.psum)
        for k in nl.affine_range(K // 128):
            res += nl.matmul(a[k], b[k, :, n * 512:(n + 1) * 512], transpose_x=True)
        r[:, n * 512:(n + 1) * 512] = nl.copy(res)
    nl.store(out, value=r)
    return out


def _operands():
    rng = np.random.default_rng(7)
    return (rng.standard_normal((256, 128)).astype(ml_dtypes.bfloat16),
            rng.standard_normal((256, 2048)).astype(ml_dtypes.bfloat16))


def test_psum_zeros_fold_into_the_first_matmul():
    A, B = _operands()
    runs = {}
    for fold in (False, True):
        with using(model(psum_zero_fold=fold)):
            runs[fold] = tiled_matmul.run((A, B), {}, target="trn1", trace=True)
    off, on = runs[False], runs[True]
    # values: the same bits both ways, and the fp32 product of the bf16 inputs
    np.testing.assert_array_equal(on.outputs, off.outputs)
    oracle = A.astype(np.float32).T @ B.astype(np.float32)
    np.testing.assert_allclose(on.outputs, oracle, rtol=1e-5, atol=1e-4)
    # switch off: one Vector memset per output tile, each max(64, 512) cycles at 1.12 GHz
    memsets = engine_events(off, "memset")
    assert [e.track for e in memsets] == ["vector"] * 4
    assert all(e.end - e.start == pytest.approx(512 / VEC, rel=1e-9) for e in memsets)
    # switch on: no memset at all, counted as folded
    assert engine_events(on, "memset") == []
    assert on.machine.stats.instructions["memset"] == 0 and on.machine.stats.folded_memsets == 4
    # tiles 2-4 of the off run wait on the in-order Vector queue for copy(n-1) -> memset(n) before their
    # first matmul; folding removes at least those three memsets from the critical path
    saved = off.machine.scheduler.end - on.machine.scheduler.end
    assert saved >= 3 * 512 / VEC


def test_pending_zero_read_before_any_matmul_gets_its_memset():
    @nki.jit
    def k(x):
        out = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.shared_hbm)
        res = nl.zeros((128, 512), nl.float32, buffer=nl.psum)
        nl.store(out, value=nl.add(nl.copy(res), nl.load(x)))
        return out
    x = np.arange(128 * 512, dtype=np.float32).reshape(128, 512)
    with using(model(psum_zero_fold=True)):
        run = k.run((x,), {}, target="trn1", trace=True)
    np.testing.assert_array_equal(run.outputs, x)
    events = engine_events(run)
    assert events[0].name == "memset" and events[0].track == "vector"       # before the copy reads it
    assert events[1].name == "tensor_copy" and events[1].start >= events[0].end
    assert run.machine.stats.folded_memsets == 0


def test_pending_zero_partial_matmul_write_gets_its_memset():
    @nki.jit
    def k(lhsT, rhs):
        out = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.shared_hbm)
        res = nl.zeros((128, 512), nl.float32, buffer=nl.psum)
        res[:, 0:256] += nisa.nc_matmul(nl.load(lhsT), nl.load(rhs))     # half the tile: the rest stays 0
        nl.store(out, value=nl.copy(res))
        return out
    rng = np.random.default_rng(3)
    a = rng.standard_normal((128, 128)).astype(np.float32)
    b = rng.standard_normal((128, 256)).astype(np.float32)
    with using(model(psum_zero_fold=True)):
        run = k.run((a, b), {}, target="trn1", trace=True)
    expected = np.zeros((128, 512), np.float32)
    expected[:, :256] = a.T @ b
    np.testing.assert_allclose(run.outputs, expected, rtol=1e-5, atol=1e-4)
    assert [e.name for e in engine_events(run)][:2] == ["memset", "nc_matmul"]
    assert run.machine.stats.folded_memsets == 0


def test_current_front_end_zeros_fold_into_accumulating_nc_matmul():
    def kernel(m):
        a = nl2.ndarray((128, 128), dtype=nl2.bfloat16, buffer=nl2.sbuf)
        b = nl2.ndarray((128, 512), dtype=nl2.bfloat16, buffer=nl2.sbuf)
        nisa2.memset(dst=a, value=1.0)
        nisa2.memset(dst=b, value=2.0)
        res = nl2.zeros((128, 512), nl2.float32, buffer=nl2.psum)
        for _ in range(3):
            nisa2.nc_matmul(dst=res, stationary=a, moving=b, accumulate=True)
        return res
    for fold in (False, True):
        with using(model(psum_zero_fold=fold)):
            m = Machine("trn1", scheduler=timing_model(trace=True), tensor_class=NkiTensor)
        with running(m):
            res = kernel(m)
        # 3 accumulations of 128 products 1 x 2
        np.testing.assert_array_equal(res.array, np.full((128, 512), 3 * 128 * 2.0, np.float32))
        psum_memsets = [e for e in m.scheduler.records if e.name == "memset" and "psum" in e.detail]
        assert len(psum_memsets) == (0 if fold else 1)


# --- engine balancing -----------------------------------------------------------------------------------
def _six_multiplies(balance: bool):
    """Six independent nl.multiply(x, 2.0) on [128, 512] fp32 SBUF tiles (tensor_scalar: Vector, Scalar
    or GpSimd per the ISA doc), timed without numerics so nothing but the six ops is scheduled."""
    with using(model(engine_balance=balance)):
        m = Machine("trn1", numerics=False, scheduler=timing_model(trace=True), tensor_class=NkiTensor)
    with running(m):
        x = nl2.ndarray((128, 512), dtype=nl2.float32, buffer=nl2.sbuf)
        outs = [nl2.multiply(x, 2.0) for _ in range(6)]
    return m, outs


def test_engine_balance_spreads_independent_nl_ops():
    off, _ = _six_multiplies(False)
    on, _ = _six_multiplies(True)
    n = 512                                                # max(MIN_II=64, N) cycles per op
    # off: all six on Vector, back to back
    assert off.scheduler.end == pytest.approx(6 * n / VEC, rel=1e-9)
    # on, greedy earliest finish (ties: Vector, Scalar, GpSimd): 1 Scalar [0, n/ACT], 2 GpSimd [0, n/POOL],
    # 3 Vector [0, n/VEC], 4 Scalar (ends 2n/ACT, ties GpSimd, beats Vector's 2n/VEC), 5 GpSimd,
    # 6 Vector [n/VEC, 2n/VEC] (Scalar and GpSimd would end at 3n/1.4 GHz = 1.097 us > 0.914 us)
    tracks = [e.track for e in on.scheduler.records]
    assert tracks == ["scalar", "gpsimd", "vector", "scalar", "gpsimd", "vector"]
    assert on.scheduler.end == pytest.approx(2 * n / VEC, rel=1e-9)
    busy = {str(k): v for k, v in on.scheduler.busy.items()}
    assert busy == pytest.approx({"vector": 2 * n / VEC, "scalar": 2 * n / ACT, "gpsimd": 2 * n / POOL}, rel=1e-9)
    assert dict(on.stats.by_engine) == {"vector": 2, "scalar": 2, "gpsimd": 2}


def test_engine_balance_keeps_explicit_nisa_engines_and_psum_off_gpsimd():
    with using(model(engine_balance=True)):
        m = Machine("trn1", numerics=False, scheduler=timing_model(trace=True), tensor_class=NkiTensor)
    with running(m):
        x = nl2.ndarray((128, 512), dtype=nl2.float32, buffer=nl2.sbuf)
        p = nl2.ndarray((128, 512), dtype=nl2.float32, buffer=nl2.psum)
        for _ in range(3):                               # explicit nisa: stays on Vector
            nisa2.tensor_scalar(dst=nl2.ndarray((128, 512), dtype=nl2.float32, buffer=nl2.sbuf), data=x,
                                op0=nl2.multiply, operand0=2.0, engine=nisa2.vector_engine)
        for _ in range(3):                               # nl op reading PSUM: GpSimd cannot reach it
            nl2.add(p, x)
    tracks = [e.track for e in m.scheduler.records]
    assert tracks[:3] == ["vector"] * 3
    assert "gpsimd" not in tracks[3:] and tracks[3:] == ["vector"] * 3     # tensor_tensor: Vector or GpSimd only


def test_engine_balance_values_do_not_depend_on_the_placement():
    @nki.jit
    def k(x, y):
        out = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.shared_hbm)
        a, b = nl.load(x), nl.load(y)
        terms = [nl.multiply(a, 3.0), nl.add(a, b), nl.subtract(b, a), nl.copy(b), nl.multiply(a, b),
                 nl.exp(a)]
        acc = terms[0]
        for t in terms[1:]:
            acc = nl.add(acc, t)
        nl.store(out, value=acc)
        return out
    rng = np.random.default_rng(11)
    x = rng.standard_normal((128, 512)).astype(np.float32)
    y = rng.standard_normal((128, 512)).astype(np.float32)
    runs = {}
    for balance in (False, True):
        with using(model(engine_balance=balance)):
            runs[balance] = k.run((x, y), {}, target="trn1", trace=True)
    np.testing.assert_array_equal(runs[True].outputs, runs[False].outputs)
    oracle = 3 * x + (x + y) + (y - x) + y + x * y + np.exp(x)
    np.testing.assert_allclose(runs[True].outputs, oracle, rtol=2e-6, atol=2e-5)
    assert {e.track for e in engine_events(runs[False])} == {"vector", "scalar"}        # exp: Scalar only
    assert {e.track for e in engine_events(runs[True])} == {"vector", "scalar", "gpsimd"}
    assert runs[True].machine.scheduler.end < runs[False].machine.scheduler.end
