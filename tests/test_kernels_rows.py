"""trnlab.kernels softmax / rmsnorm / layernorm against float64 numpy, fp32 and bf16, ragged shapes,
both the SBUF-resident and the streamed (row longer than the budget) paths."""
import importlib

import ml_dtypes
import numpy as np
import pytest

from trnlab.kernels import layernorm, rmsnorm, softmax

pytestmark = pytest.mark.filterwarnings("error::trnlab.errors.TrnlabWarning")   # no uninitialised reads

BF16 = ml_dtypes.bfloat16
BF16_EPS = 2.0 ** -8      # bf16 unit roundoff (8 significand bits): one rounding is within 2^-8 relative
FP32_EPS = 2.0 ** -24
SHAPES = [(128, 256), (300, 1000), (1, 1), (2, 3, 77), (129, 4100)]


def run(kernel, *args, **kwargs):
    return kernel.run(args, kwargs, timing=False).outputs


def randn(shape, dtype, seed=0, std=1.0, mean=0.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * std + mean).astype(np.float32).astype(dtype)


def streamed(monkeypatch, name):
    """Force the streamed path with small chunks (several chunks, the last one partial)."""
    module = importlib.import_module(f"trnlab.kernels.{name}")
    monkeypatch.setattr(module, "ROW_BUDGET", 0)
    monkeypatch.setattr(module, "CHUNK", 512 if name == "layernorm" else 200)


def assert_close(out, exact, dtype, rel_fp32):
    """All statistics are fp32, so the kernel's fp32 value is within rel_fp32 * scale of the exact
    value; bf16 outputs add one rounding of the result (2^-8 relative)."""
    out64 = out.astype(np.float64)
    bound = rel_fp32 + (BF16_EPS * np.abs(exact) if dtype == BF16 else 0.0)
    err = np.abs(out64 - exact)
    assert np.all(err <= bound), f"max error {err.max():.3g}, worst excess {(err - bound).max():.3g}"


# --- softmax --------------------------------------------------------------------------------------
def softmax64(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def check_softmax(x, dtype):
    out = run(softmax, x)
    exact = softmax64(x)
    n = x.shape[-1]
    # fp32: exp within a few ulps (2^-22 relative), the sum of n terms within n * 2^-24 relative,
    # the reciprocal and the product 2^-24 each: bound 4*(2^-22 + n*2^-24) * p + 1e-9.
    assert out.dtype == np.dtype(dtype) and out.shape == x.shape
    assert_close(out, exact, dtype, 4 * (2 ** -22 + n * FP32_EPS) * exact + 1e-9)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_softmax(shape, dtype):
    check_softmax(randn(shape, dtype, std=3.0), dtype)


@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_softmax_streamed(monkeypatch, dtype):
    streamed(monkeypatch, "softmax")
    check_softmax(randn((130, 1000), dtype, std=3.0), dtype)


def test_softmax_long_row_is_streamed_within_sbuf():
    x = randn((3, 13000), np.float32, std=3.0)     # 13000 * (4 + 4) B > ROW_BUDGET: streamed path
    result = softmax.run((x,), {}, timing=False)
    assert result.machine.sbuf.peak_bytes < 64 * 1024
    check_softmax(x, np.float32)


def test_softmax_statistics_are_fp32_for_bf16():
    # 2000 equal logits: each p = 1/2000 needs the fp32 sum; a bf16 running sum stalls at 256.
    x = np.zeros((4, 2000), dtype=BF16)
    out = run(softmax, x).astype(np.float64)
    assert np.all(np.abs(out - 1 / 2000) <= BF16_EPS / 2000)


def test_log_softmax_into_a_transposed_view(monkeypatch):
    """The model path's entry: log_softmax over dim 0 of [N, R] via permuted (strided) HBM views,
    resident and streamed."""
    import trnlab.nki as nki
    import trnlab.nki.language as nl
    from trnlab.kernels.softmax import softmax_into

    @nki.jit
    def log_softmax_dim0(x):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        softmax_into(out.permute((1, 0)), x.permute((1, 0)), log=True)
        return out

    x = randn((700, 130), np.float32, std=3.0)
    x64 = x.astype(np.float64)
    exact = x64 - x64.max(0) - np.log(np.exp(x64 - x64.max(0)).sum(0))
    # fp32: log of a 700-term sum within (700 + 8) * 2^-24 relative of it (absolute in the log),
    # x - max exact-ish (one rounding of |x| <= ~15): 1e-5 absolute covers both.
    np.testing.assert_allclose(run(log_softmax_dim0, x), exact, rtol=0, atol=1e-5)
    streamed(monkeypatch, "softmax")
    np.testing.assert_allclose(run(log_softmax_dim0, x), exact, rtol=0, atol=1e-5)


# --- rmsnorm --------------------------------------------------------------------------------------
def rmsnorm64(x, w, eps):
    x = x.astype(np.float64)
    y = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)
    return y * w.astype(np.float64) if w is not None else y


def check_rmsnorm(x, w, dtype, eps=1e-6):
    out = run(rmsnorm, x, w, eps=eps)
    exact = rmsnorm64(x, w, eps)
    n = x.shape[-1]
    # fp32: mean of squares within n * 2^-24 relative, rsqrt and two products a few ulps: the
    # result is within (n/2 + 8) * 2^-24 relative of the exact value.
    assert out.dtype == np.dtype(dtype)
    assert_close(out, exact, dtype, (n / 2 + 8) * FP32_EPS * np.abs(exact) + 1e-9)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_rmsnorm(shape, dtype):
    x = randn(shape, dtype, std=2.0)
    check_rmsnorm(x, randn(shape[-1:], dtype, seed=1), dtype)


@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_rmsnorm_without_weight_and_streamed(monkeypatch, dtype):
    streamed(monkeypatch, "rmsnorm")
    x = randn((130, 1000), dtype, std=2.0)
    check_rmsnorm(x, None, dtype, eps=1e-5)
    check_rmsnorm(x, randn((1000,), dtype, seed=1), dtype, eps=1e-5)


@pytest.mark.parametrize("shape", [(1, 8192), (3, 1, 1024), (2, 128)])
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_rmsnorm_few_rows_spread_over_partitions(shape, dtype):
    x = randn(shape, dtype, std=2.0)
    check_rmsnorm(x, None, dtype, eps=1e-5)
    check_rmsnorm(x, randn(shape[-1:], dtype, seed=1), dtype, eps=1e-5)


def test_rmsnorm_one_token_is_faster_spread(monkeypatch):
    """One [1, 8192] row: on one partition every instruction walks 8192 elements; spread over 128
    partitions, 64 each (plus a matmul)."""
    x, w = randn((1, 8192), BF16), randn((8192,), BF16, seed=1)
    spread = rmsnorm.run((x, w), {}, timing=True).device_latency_s
    monkeypatch.setattr(importlib.import_module("trnlab.kernels.rmsnorm"), "SPREAD_ROWS", 0)
    rows = rmsnorm.run((x, w), {}, timing=True).device_latency_s
    assert spread < rows / 2


# --- layernorm ------------------------------------------------------------------------------------
def layernorm64(x, g, b, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    if g is not None:
        y = y * g.astype(np.float64)
    return y + b.astype(np.float64) if b is not None else y


def check_layernorm(x, g, b, dtype, eps=1e-5):
    out = run(layernorm, x, g, b, eps=eps)
    exact = layernorm64(x, g, b, eps)
    n = x.shape[-1]
    # fp32: bn_stats/bn_aggr mean and variance within n * 2^-24 relative, (x - mean) loses up to
    # |mean|/std digits (mean 3, std 1 here: x4), then rsqrt, gamma and beta a few ulps each.
    scale = np.abs(exact) + (np.abs(b.astype(np.float64)) if b is not None else 0) + 1
    assert out.dtype == np.dtype(dtype)
    assert_close(out, exact, dtype, 4 * (n + 16) * FP32_EPS * scale)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_layernorm(shape, dtype):
    x = randn(shape, dtype, std=1.0, mean=3.0)
    g, b = randn(shape[-1:], dtype, seed=1), randn(shape[-1:], dtype, seed=2)
    check_layernorm(x, g, b, dtype)


@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_layernorm_optional_affine_and_streamed(monkeypatch, dtype):
    streamed(monkeypatch, "layernorm")
    x = randn((130, 1300), dtype, mean=3.0)
    g, b = randn((1300,), dtype, seed=1), randn((1300,), dtype, seed=2)
    for gamma, beta in ((None, None), (g, None), (None, b), (g, b)):
        check_layernorm(x, gamma, beta, dtype)


def test_layernorm_uses_bn_stats_per_512_elements():
    result = layernorm.run((randn((130, 1300), np.float32),), {}, timing=False)
    ops = result.machine.stats.instructions
    assert ops["bn_stats"] == 2 * 3 and ops["bn_aggr"] == 2      # 2 row tiles x ceil(1300/512)
