"""Tests of trnlab.nki_beta1.language."""
import numpy as np
import pytest

import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.isa as nisa
import trnlab.nki_beta1.language as nl


rng = np.random.default_rng(11)


def _pool_ref(x, k, pad, stride, fill, reduce):
    c, h, w = x.shape
    xp = np.full((c, h + 2 * pad, w + 2 * pad), fill, np.float64)
    xp[:, pad:pad + h, pad:pad + w] = x
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out = np.empty((c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, i, j] = reduce(xp[:, i * stride:i * stride + k, j * stride:j * stride + k], axis=(1, 2))
    return out


def _pool_kernel(reducer, k, pad, stride):
    @nki.jit
    def pool(x):
        c, h, w = x.shape
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        out = nl.ndarray((c, ho, wo), dtype=x.dtype, buffer=nl.shared_hbm)
        t = nl.load(x)
        ic = nl.arange(c)[:, None, None, None, None]
        ih = nl.arange(ho)[None, :, None, None, None]
        iw = nl.arange(wo)[None, None, :, None, None]
        kh = nl.arange(k)[None, None, None, :, None]
        kw = nl.arange(k)[None, None, None, None, :]
        r, q = stride * ih - pad + kh, stride * iw - pad + kw
        inside = (r >= 0) & (q >= 0) & (r < h) & (q < w)
        nl.store(out, value=reducer(t[ic, r, q], axis=[3, 4], mask=inside))
        return out
    return pool


def _seeded_rand_kernel(seed):
    @nki.jit
    def k():
        out = nl.ndarray((2, 64, 32), dtype=nl.float32, buffer=nl.shared_hbm)
        nl.random_seed(seed)
        nl.store(out[0], value=nl.rand((64, 32)))
        nl.random_seed(seed)
        nl.store(out[1], value=nl.rand((64, 32)))
        return out
    return k


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("reducer,fill,ref", [(nl.max, -np.inf, np.max), (nl.sum, 0.0, np.sum),
                                              (nl.min, np.inf, np.min)])
def test_masked_reduction_over_padding_ignores_out_of_bound_window(reducer, fill, ref):
    """A window reduction whose index runs past the tile edge where mask= is False (padding): the masked-out
    elements take no part, as if padded with the reducer's identity."""
    x = rng.standard_normal((16, 9, 7)).astype(np.float32)
    out = nki.simulate_kernel(_pool_kernel(reducer, 3, 1, 2), x)
    np.testing.assert_allclose(out, _pool_ref(x, 3, 1, 2, fill, ref), rtol=1e-6, atol=1e-6)  # fp32 sums of <= 9


def test_masked_reduction_window_fully_masked_leaves_dst_unwritten():
    """A dst element whose whole window is masked out is not written (stays as the memset value)."""
    @nki.jit
    def k(x):
        out = nl.ndarray((x.shape[0], 4), dtype=x.dtype, buffer=nl.shared_hbm)
        t = nl.load(x)
        res = nl.full((x.shape[0], 4), -7.0, dtype=nl.float32, buffer=nl.sbuf)
        ip = nl.arange(x.shape[0])[:, None, None]
        j = nl.arange(4)[None, :, None]
        w = nl.arange(3)[None, None, :]
        res[...] = nl.max(t[ip, 3 * j + w - 2], axis=[2], mask=(3 * j + w - 2 >= 0) & (j < 3))
        nl.store(out, value=res)
        return out
    x = rng.standard_normal((8, 8)).astype(np.float32)
    out = nki.simulate_kernel(k, x)
    xp = np.concatenate([np.full((8, 2), -np.inf, np.float32), x], axis=1)
    ref = np.stack([xp[:, 3 * j:3 * j + 3].max(1) for j in range(3)] + [np.full(8, -7.0)], axis=1)
    np.testing.assert_array_equal(out, ref)                        # max is exact


def test_finfo_iinfo_report_nki_dtype_limits():
    assert nl.finfo(nl.bfloat16).max == pytest.approx(3.3895313892515355e38)
    assert nl.finfo(nl.float32).min == np.finfo(np.float32).min
    assert nl.finfo(nl.float8_e4m3).max == 240.0
    assert nl.iinfo(nl.int8).min == -128 and nl.iinfo(nl.uint16).max == 65535


def test_full_with_finfo_min_then_max_with_padding_border():
    """The vision select-and-scatter idiom: a tile pre-filled with finfo(dtype).min, data loaded into its
    interior, then a window max (the border never wins)."""
    @nki.jit
    def k(x):
        c, h, w = x.shape
        out = nl.ndarray((c, h, w), dtype=x.dtype, buffer=nl.shared_hbm)
        padded = nl.full((c, h + 2, w + 2), dtype=x.dtype, buffer=nl.sbuf, fill_value=nl.finfo(x.dtype).min)
        padded[0:c, 1:h + 1, 1:w + 1] = nl.load(x)
        g = nl.mgrid[0:c, 0:h, 0:w, 0:3]
        res = nl.max(padded[g.p, g.x + 1, g.y + g.z], axis=[3])
        nl.store(out, value=res)
        return out
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    out = nki.simulate_kernel(k, x)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1)), constant_values=-np.inf)
    np.testing.assert_array_equal(out, np.maximum(np.maximum(xp[:, :, :-2], xp[:, :, 1:-1]), xp[:, :, 2:]))


def test_beta1_random_seed_restarts_the_stream():
    a = nki.simulate_kernel(_seeded_rand_kernel(5))
    np.testing.assert_array_equal(a[0], a[1])
    assert a.min() >= 0.0 and a.max() < 1.0
    b = nki.simulate_kernel(_seeded_rand_kernel(6))
    assert not np.array_equal(a[0], b[0])


# --- Beta 1 and current: reductions over free axes that are not the trailing ones ------------------------
def test_b1_sum_over_interleaved_axes_pools_windows():
    @nki.jit
    def pool3(x):
        c, h, w = x.shape
        out = nl.ndarray((c, h // 3, w // 3), dtype=x.dtype, buffer=nl.shared_hbm)
        p, a, b, d, e = nl.mgrid[0:c, 0:h // 3, 0:3, 0:w // 3, 0:3]
        t = nl.load(x)
        nl.store(out, nl.max(t[p, 3 * a + b, 3 * d + e], axis=[2, 4]))
        return out

    x = randn(16, 9, 12)
    want = x.reshape(16, 3, 3, 4, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(nki.simulate_kernel(pool3, x), want)      # max is exact


# --- Beta 1: a rank-1 HBM view loads as a [n, 1] tile (per-partition scale column) -----------------------
def test_b1_load_of_a_column_gives_a_partition_vector():
    @nki.jit
    def scale_rows(x, s):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        col = nl.load(s[0:64, 2])                         # int index drops the HBM dim -> [64, 1] tile
        nl.store(out, nisa.activation(op=nl.exp, data=nl.load(x), scale=col))
        return out

    x, s = randn(64, 10), randn(64, 4)
    got = nki.simulate_kernel(scale_rows, x, s)
    np.testing.assert_allclose(got, np.exp(x * s[:, 2:3]), rtol=1e-5, atol=1e-6)


def test_b1_store_into_a_column():
    @nki.jit
    def row_sums(x, out):
        nl.store(out[0:32, 1], nl.sum(nl.load(x), axis=1))

    x, out = randn(32, 7), np.zeros((32, 3), np.float32)
    nki.simulate_kernel(row_sums, x, out)                 # modified numpy inputs are written back
    np.testing.assert_allclose(out[:, 1], x.sum(axis=1), rtol=1e-5, atol=1e-5)
    assert not out[:, [0, 2]].any()
