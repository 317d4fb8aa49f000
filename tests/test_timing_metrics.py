"""One definition of FLOPs, MFU, HFU and MBU: benchmark, profile summary and torch report agree.

Oracles: FLOPs counted by hand from the kernel's loop shape (2*M*N*K); peaks from AWS's published
figures (bf16 128x128 PEs x 2 x clock; trn2 double-row FP8 = 2x bf16, "158 TFLOPS"; AWS's profiler
weights FP8 FLOPs 0.5x on Trn2, profile-schema-reference.rst).
"""
import ml_dtypes
import numpy as np
import pytest

import trnlab
import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.profile import summarize as profile_summary

TRN2_BF16_PEAK = 128 * 128 * 2 * 2.4e9        # FLOP/s, RTD neuron-core-v3 "79 TFLOPS"
TRN2_FP8_PEAK = 2 * TRN2_BF16_PEAK             # double-row FP8, RTD "158 TFLOPS"


@nki.jit
def tiled_matmul(lhsT, rhs):
    """out[M, N] = lhsT.T @ rhs in 128 x 128 x 512 tiles, K accumulated in PSUM."""
    k, m = lhsT.shape
    n = rhs.shape[1]
    out = nl.ndarray((m, n), dtype=nl.float32, buffer=nl.shared_hbm)
    for mi in nl.affine_range(m // 128):
        for ni in nl.affine_range(n // 512):
            ps = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)
            for ki in nl.sequential_range(k // 128):
                lt = nl.ndarray((128, 128), dtype=lhsT.dtype, buffer=nl.sbuf)
                rt = nl.ndarray((128, 512), dtype=rhs.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=lt, src=lhsT[ki * 128:(ki + 1) * 128, mi * 128:(mi + 1) * 128])
                nisa.dma_copy(dst=rt, src=rhs[ki * 128:(ki + 1) * 128, ni * 512:(ni + 1) * 512])
                nisa.nc_matmul(dst=ps, stationary=lt, moving=rt, accumulate=ki > 0)
            ot = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.sbuf)
            nisa.tensor_copy(dst=ot, src=ps)
            nisa.dma_copy(dst=out[mi * 128:(mi + 1) * 128, ni * 512:(ni + 1) * 512], src=ot)
    return out


@nki.jit
def transpose_then_matmul(x, rhs):
    """xT = transpose(x) on the PE (an is_transpose matmul), then xT.T @ rhs: one useful matmul."""
    out = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.shared_hbm)
    xt = nl.ndarray((128, 128), dtype=x.dtype, buffer=nl.sbuf)
    ident = nl.ndarray((128, 128), dtype=x.dtype, buffer=nl.sbuf)
    rt = nl.ndarray((128, 512), dtype=rhs.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=xt, src=x)
    nisa.dma_copy(dst=rt, src=rhs)
    nisa.memset(dst=ident, value=0.0)
    nisa.affine_select(dst=ident, pattern=[[-1, 128]], channel_multiplier=1, on_true_tile=ident,
                       on_false_value=1.0, cmp_op=nl.not_equal)
    tp = nl.ndarray((128, 128), dtype=x.dtype, buffer=nl.psum)
    nisa.nc_matmul(dst=tp, stationary=xt, moving=ident, is_transpose=True)
    lt = nl.ndarray((128, 128), dtype=x.dtype, buffer=nl.sbuf)
    nisa.tensor_copy(dst=lt, src=tp)
    ps = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_matmul(dst=ps, stationary=lt, moving=rt)
    ot = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_copy(dst=ot, src=ps)
    nisa.dma_copy(dst=out, src=ot)
    return out


def _inputs(dtype, m=256, k=384, n=1024):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((k, m)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, ml_dtypes.float8_e4m3])
def test_matmul_flops_are_2mnk_in_every_report(dtype):
    m, k, n = 256, 384, 1024
    lhsT, rhs = _inputs(dtype, m, k, n)
    r = trnlab.benchmark(tiled_matmul, target="trn2", trace=True)(lhsT, rhs)
    np.testing.assert_allclose(r.outputs, lhsT.astype(np.float32).T @ rhs.astype(np.float32), rtol=1e-3, atol=1e-2)
    assert r.flops == 2 * m * n * k
    s = profile_summary(r.machine)
    assert s["matmul_flops"] == 2 * m * n * k
    assert sum(e.flops for e in r.machine.scheduler.records) == 2 * m * n * k


def test_fp8_matmul_mfu_same_in_benchmark_and_profile():
    """The issue-8 case: one trn2 fp8 kernel gave 20.9% MFU in benchmark and 10.5% in the profile."""
    lhsT, rhs = _inputs(ml_dtypes.float8_e4m3)
    r = trnlab.benchmark(tiled_matmul, target="trn2")(lhsT, rhs)
    s = profile_summary(r.machine)
    expected = 2 * 256 * 384 * 1024 / (TRN2_FP8_PEAK * r.latency_s)
    assert r.mfu == pytest.approx(expected, rel=1e-12)
    assert s["mfu"] == pytest.approx(expected, rel=1e-12)
    assert r.hfu == pytest.approx(r.mfu, rel=1e-12) and s["hfu"] == pytest.approx(r.hfu, rel=1e-12)


def test_mbu_same_in_benchmark_and_profile_and_counts_hbm_bytes():
    lhsT, rhs = _inputs(ml_dtypes.bfloat16)
    r = trnlab.benchmark(tiled_matmul, target="trn2")(lhsT, rhs)
    s = profile_summary(r.machine)
    # every DMA here moves HBM <-> SBUF: loads of both operands per (mi, ni, ki), one fp32 store per (mi, ni)
    hbm = 2 * 2 * 3 * (128 * 128 + 128 * 512) * 2 + 2 * 2 * 128 * 512 * 4
    assert r.hbm_bytes == hbm and s["hbm_bytes"] == hbm
    expected = hbm / (2.9e12 / 8 * r.latency_s)          # RTD trainium2: 2.9 TB/s per chip, 8 NeuronCores
    assert r.mbu == pytest.approx(expected, rel=1e-12) and s["mbu"] == pytest.approx(expected, rel=1e-12)


def test_transposes_count_in_hfu_not_in_flops_or_mfu():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((128, 128)).astype(ml_dtypes.bfloat16)
    rhs = rng.standard_normal((128, 512)).astype(ml_dtypes.bfloat16)
    r = trnlab.benchmark(transpose_then_matmul, target="trn2")(x, rhs)
    np.testing.assert_allclose(r.outputs, x.astype(np.float32) @ rhs.astype(np.float32), rtol=1e-2, atol=1e-1)
    useful = 2 * 128 * 128 * 512
    transpose = 2 * 128 * 128 * 128                       # identity matmul: 2 * P * P * F
    assert r.flops == useful and r.machine.stats.flops == useful
    assert r.mfu == pytest.approx(useful / (TRN2_BF16_PEAK * r.latency_s), rel=1e-12)
    assert r.hfu == pytest.approx((useful + transpose) / (TRN2_BF16_PEAK * r.latency_s), rel=1e-12)
    s = profile_summary(r.machine)
    assert (s["mfu"], s["hfu"]) == (r.mfu, r.hfu)


def test_events_carry_structured_operands():
    lhsT, rhs = _inputs(ml_dtypes.bfloat16, 128, 128, 512)
    r = trnlab.benchmark(tiled_matmul, target="trn2", trace=True)(lhsT, rhs)
    mm = next(e for e in r.machine.scheduler.records if e.name == "nc_matmul")
    dst, stationary, moving = mm.operands
    assert (dst.shape, dst.dtype, dst.buffer) == ((128, 512), "float32", "psum")
    assert (stationary.shape, stationary.dtype, stationary.buffer) == ((128, 128), "bfloat16", "sbuf")
    assert (moving.shape, moving.dtype) == ((128, 512), "bfloat16")
    assert mm.flops == 2 * 128 * 128 * 512


def test_torch_report_mfu_equals_benchmark_definition():
    torch = pytest.importorskip("torch")
    from trnlab.torch import compile as trn_compile

    class MatMul(torch.nn.Module):
        def forward(self, a, b):
            return a @ b

    m, k, n = 128, 256, 512
    a, b = torch.randn(m, k), torch.randn(k, n)
    compiled = trn_compile(MatMul(), (a, b), target="trn2", dtype=torch.bfloat16)
    rep = compiled.report
    assert rep.model_flops == 2 * m * n * k
    machine = compiled.last_run.machine
    s = profile_summary(machine)
    assert s["matmul_flops"] == 2 * m * n * k                       # no padding: the same FLOPs
    assert rep.mfu == pytest.approx(2 * m * n * k / (TRN2_BF16_PEAK * rep.latency_s), rel=1e-12)
    assert rep.mfu == pytest.approx(s["mfu"], rel=1e-12)
    assert rep.hfu == pytest.approx(s["hfu"], rel=1e-12)
