"""gemm with the transposed operands training and inference pass (x @ w.T, dy.T @ x): values against
numpy, and their cost against the same GEMM on contiguous operands (no DMA transposes)."""
import ml_dtypes
import numpy as np
import pytest

import trnlab
import trnlab.nki as nki
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.kernels.gemm import gemm_into

bf16 = ml_dtypes.bfloat16


@nki.jit
def x_wT(x, w):
    """x [M, K] @ w.T for w [N, K] row-major: b is a column-major view."""
    out = nl.ndarray((x.shape[0], w.shape[0]), dtype=x.dtype, buffer=nl.shared_hbm)
    return gemm_into(out, x, w.permute(1, 0))


@nki.jit
def x_w(x, w):
    out = nl.ndarray((x.shape[0], w.shape[1]), dtype=x.dtype, buffer=nl.shared_hbm)
    return gemm_into(out, x, w)


@nki.jit
def dyT_x(dy, x):
    """dy [T, N].T @ x [T, K]: a is a column-major view (the weight gradient)."""
    out = nl.ndarray((dy.shape[1], x.shape[1]), dtype=x.dtype, buffer=nl.shared_hbm)
    return gemm_into(out, dy.permute(1, 0), x)


def _rand(rng, shape, dtype, std=1.0):
    return (rng.standard_normal(shape) * std).astype(dtype)


@pytest.mark.parametrize("target", ["trn1", "trn2"])
def test_x_wT_matches_numpy_ragged(target):
    """Ragged M, N, K (not multiples of 128 or 512) through the PE-transpose path of both operands."""
    rng = np.random.default_rng(0)
    x, w = _rand(rng, (200, 300), bf16), _rand(rng, (700, 300), bf16, std=1 / 16)
    out = nki.simulate(x_wT, target=target)(x, w)
    ref = x.astype(np.float32) @ w.astype(np.float32).T
    assert out.shape == (200, 700) and out.dtype == bf16
    # fp32 sums of exact bf16 products, rounded once to bf16 (2^-8 relative)
    np.testing.assert_allclose(out.astype(np.float32), ref, rtol=2 ** -7, atol=2 ** -7 * np.abs(ref).max())


def test_transposes_are_exact_fp32():
    """fp32 operands: a transpose that rounded (to bf16, say) would miss numpy by far more than 1e-5."""
    rng = np.random.default_rng(1)
    x, w = _rand(rng, (130, 260), np.float32), _rand(rng, (140, 260), np.float32)
    out = nki.simulate(x_wT, target="trn2")(x, w)
    np.testing.assert_allclose(out, x @ w.T, rtol=1e-5, atol=1e-5 * np.abs(x @ w.T).max())


def test_weight_gradient_and_gemv_match_numpy():
    rng = np.random.default_rng(2)
    dy, x = _rand(rng, (384, 150), bf16), _rand(rng, (384, 260), bf16, std=1 / 16)
    got = nki.simulate(dyT_x, target="trn2")(dy, x).astype(np.float32)
    ref = dy.astype(np.float32).T @ x.astype(np.float32)
    np.testing.assert_allclose(got, ref, rtol=2 ** -7, atol=2 ** -7 * np.abs(ref).max())
    v, w = _rand(rng, (1, 1000), bf16), _rand(rng, (600, 1000), bf16, std=1 / 32)     # decode GEMV
    got = nki.simulate(x_wT, target="trn2")(v, w).astype(np.float32)
    ref = v.astype(np.float32) @ w.astype(np.float32).T
    np.testing.assert_allclose(got, ref, rtol=2 ** -7, atol=2 ** -7 * np.abs(ref).max())


def test_x_wT_costs_close_to_contiguous(monkeypatch):
    """1024^3 bf16 on trn2, timing only. Transposing x and w on the PE (128 cycles per 128x128 block,
    each transposed once: 2 * 8 * 8 blocks = 16k cycles) adds at most 25% to the matmuls' 8 * 8 * 8
    * 2 (two 512-wide halves per row tile) * 512 cycles = 64k when nothing overlaps them; the copies
    and DMAs overlap. So x @ w.T must cost < 1.2x x @ w. (DMA transposes of w per 512-row block of x
    cost 1.44x.) No DMA transposes: the rows are read as stored."""
    calls = []
    real = nisa.dma_transpose
    monkeypatch.setattr(nisa, "dma_transpose", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = np.zeros((1024, 1024), bf16)
    t_nt = trnlab.benchmark(x_wT, target="trn2", numerics=False)(a, a).latency_s
    t_nn = trnlab.benchmark(x_w, target="trn2", numerics=False)(a, a).latency_s
    assert not calls
    assert t_nt < 1.2 * t_nn, (t_nt, t_nn)


def test_long_k_weight_gradient_matches_numpy():
    """K = 26000 tokens (a weight gradient over many tokens): too long for K-major column blocks of b
    in trn1's SBUF, so b is streamed; the values still match numpy."""
    rng = np.random.default_rng(3)
    dy, x = _rand(rng, (26000, 130), bf16), _rand(rng, (26000, 200), bf16, std=1 / 64)
    got = nki.simulate(dyT_x, target="trn1")(dy, x).astype(np.float32)
    ref = dy.astype(np.float32).T @ x.astype(np.float32)
    np.testing.assert_allclose(got, ref, rtol=2 ** -7, atol=2 ** -7 * np.abs(ref).max())


@pytest.mark.parametrize("n", [1536, 2752])
def test_llama_7b_tp8_projection_fits_trn1_sbuf(n):
    """x [4096, 4096] @ w.T of Llama-2-7B's TP8 QKV (1536) and gate/up (2752) shards on trn1: the
    resident row block, b's column blocks and the staging fit its 192 KiB per partition, and the GEMM
    stays above 50% MFU (it ran at 32% with w DMA-transposed per 512-row block of x)."""
    x, w = np.zeros((4096, 4096), bf16), np.zeros((n, 4096), bf16)
    r = trnlab.benchmark(x_wT, target="trn1", numerics=False)(x, w)
    assert r.mfu > 0.5, r.mfu
