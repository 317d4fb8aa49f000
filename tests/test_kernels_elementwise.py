"""trnlab.kernels add / transpose / rope / cumsum against numpy, fp32 and bf16, shapes not divisible by 128."""
import importlib

import ml_dtypes
import numpy as np
import pytest

from trnlab.kernels import add, cumsum, rope, transpose
from trnlab.kernels._examples import rope_tables

cumsum_module = importlib.import_module("trnlab.kernels.cumsum")   # the package attribute is the kernel

pytestmark = pytest.mark.filterwarnings("error::trnlab.errors.TrnlabWarning")   # no uninitialised reads

BF16 = ml_dtypes.bfloat16
BF16_EPS = 2.0 ** -8      # bf16 unit roundoff: 8 significand bits; one rounding is within 2^-8 relative


def run(kernel, *args, **kwargs):
    return kernel.run(args, kwargs, timing=False).outputs


def randn(shape, dtype, seed=0, std=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32).astype(dtype)


@pytest.mark.parametrize("shape", [(128, 512), (300, 1000), (1, 7), (2, 3, 77), (5, 4100)])
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_add(shape, dtype):
    a, b = randn(shape, dtype, 1), randn(shape, dtype, 2)
    out = run(add, a, b)
    assert out.dtype == np.dtype(dtype) and out.shape == shape
    # One fp32 add rounded once to the output dtype, exactly what numpy does: bit-exact (tolerance 0).
    expected = (a.astype(np.float32) + b.astype(np.float32)).astype(dtype)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("shape", [(128, 128), (300, 200), (1, 130), (129, 1), (2, 130, 257)])
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_transpose_is_bit_exact(shape, dtype):
    x = randn(shape, dtype)
    out = run(transpose, x)
    np.testing.assert_array_equal(out, np.swapaxes(x, -1, -2))      # data movement only: tolerance 0


def test_transpose_uses_the_tensor_engine():
    out = transpose.run((randn((300, 200), np.float32),), {}, timing=False)
    ops = out.machine.stats.instructions
    assert ops["nc_transpose"] == 3 * 2          # ceil(300/128) x ceil(200/128) blocks


def rope64(x, cos, sin):
    """Rotary embedding (rotate-half form) in float64: x * cos + rotate_half(x) * sin, with
    rotate_half(x) = [-x2, x1] for x = [x1, x2]; [B, S, D] tables apply to every head of [B, H, S, D]."""
    x, cos, sin = (t.astype(np.float64) for t in (x, cos, sin))
    if cos.ndim == 3 and x.ndim == 4:
        cos, sin = cos[:, None], sin[:, None]
    h = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., h:], x[..., :h]], axis=-1) * sin


@pytest.mark.parametrize("x_shape,cos_batch", [((1, 2, 200, 64), None), ((2, 3, 130, 32), 2), ((77, 16), None)])
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_rope(x_shape, cos_batch, dtype):
    s, d = x_shape[-2:]
    cos, sin = rope_tables(s, d, dtype)
    if cos_batch:                                  # per-batch positions: [B, S, D]
        cos, sin = np.stack([np.roll(cos, i, 0) for i in range(cos_batch)]), np.stack(
            [np.roll(sin, i, 0) for i in range(cos_batch)])
    x = randn(x_shape, dtype)
    out = run(rope, x, cos, sin)
    exact = rope64(x, cos, sin)
    # fp32: two products and a sum, each within 2^-24 relative of |x|*(|cos|+|sin|) <= 2|x| -> 1e-6 is ample.
    # bf16: plus one rounding of the output, 2^-8 relative.
    bound = 1e-6 * (np.abs(x).astype(np.float64) * 2 + 1)
    if dtype == BF16:
        bound = bound + BF16_EPS * np.abs(exact)
    assert np.all(np.abs(out.astype(np.float64) - exact) <= bound)


def _cumsum_bound(x, dtype):
    """fp32 running sum of n terms: error <= n * 2^-24 * sum|x| (sequential summation bound);
    bf16 output: plus one rounding, 2^-8 relative."""
    x64 = x.astype(np.float64)
    exact = np.cumsum(x64, axis=-1)
    n = np.arange(1, x.shape[-1] + 1)
    bound = n * 2.0 ** -24 * np.cumsum(np.abs(x64), axis=-1) + 1e-30
    if dtype == BF16:
        bound = bound + BF16_EPS * np.abs(exact)
    return exact, bound


@pytest.mark.parametrize("shape", [(128, 64), (300, 500), (1, 1), (2, 3, 77)])
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_cumsum(shape, dtype):
    x = randn(shape, dtype)
    out = run(cumsum, x)
    exact, bound = _cumsum_bound(x, dtype)
    assert out.dtype == np.dtype(dtype)
    assert np.all(np.abs(out.astype(np.float64) - exact) <= bound)


@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_cumsum_carries_fp32_sums_across_chunks(monkeypatch, dtype):
    monkeypatch.setattr(cumsum_module, "CHUNK", 64)          # 300 columns -> 5 chunks, last one partial
    x = randn((130, 300), dtype, std=10.0)
    run_ = cumsum.run((x,), {}, timing=False)
    assert run_.machine.stats.instructions["tensor_tensor_scan"] == 2 * 5
    exact, bound = _cumsum_bound(x, dtype)
    assert np.all(np.abs(run_.outputs.astype(np.float64) - exact) <= bound)


def test_few_outer_rows_beside_a_broadcast_table_still_use_the_partitions():
    """x [heads, seq, dim] * table [seq, dim] (RoPE's shape): the operands coalesce to [4, seq*dim] and
    the walk must not put 4 rows on the 128 partitions. Oracle: the broadcast table moves fewer bytes
    than the same product with the table materialized per head, so it cannot take much longer."""
    from trnlab.kernels.elementwise import elementwise
    x, t = randn((4, 512, 128), np.float32, 1), randn((512, 128), np.float32, 2)
    bcast = elementwise.run((x, t), {"op": "multiply"})
    full = elementwise.run((x, np.ascontiguousarray(np.broadcast_to(t, x.shape))), {"op": "multiply"})
    np.testing.assert_array_equal(bcast.outputs, x * t)
    assert bcast.device_latency_s < 1.1 * full.device_latency_s
