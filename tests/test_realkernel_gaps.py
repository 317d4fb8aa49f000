"""Gaps found by running public NKI kernels unmodified (max-pool padding masks, vision select-and-scatter,
resize, fft1d), each pinned with our own small kernel against numpy."""
import numpy as np
import pytest

import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.isa as nisa
import trnlab.nki_beta1.language as nl
from trnlab.errors import BufferKindError

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


def test_hbm_reshape_accepts_shape_keyword():
    @nki.jit
    def k(x):
        b, h, w, c = x.shape
        out = nl.ndarray((b, h * w, c), dtype=x.dtype, buffer=nl.shared_hbm)
        flat = x.reshape(shape=(b, h * w, c))
        ib, ic = nl.mgrid[0:b, 0:c]
        for i in nl.static_range(h * w):
            nl.store(out[ib, i, ic], value=nl.load(flat[ib, h * w - 1 - i, ic]))
        return out
    x = rng.standard_normal((2, 3, 2, 5)).astype(np.float32)
    np.testing.assert_array_equal(nki.simulate_kernel(k, x), x.reshape(2, 6, 5)[:, ::-1])


def test_nc_matmul_moves_a_compiler_placed_transpose_result_to_sbuf():
    """`wt = nisa.nc_transpose(w)` lands in PSUM (the kernel did not place it); feeding it to nc_matmul makes
    the front end move it to SBUF first, as neuronx-cc does."""
    @nki.jit
    def k(a, w):
        out = nl.ndarray((a.shape[0], w.shape[0]), dtype=nl.float32, buffer=nl.shared_hbm)
        a_t = nisa.nc_transpose(nl.load(a))
        w_t = nisa.nc_transpose(nl.load(w))
        res = nl.ndarray((a.shape[0], w.shape[0]), dtype=nl.float32, buffer=nl.psum)
        res[...] = nisa.nc_matmul(a_t, w_t)             # a @ w.T
        nl.store(out, value=nl.copy(res))
        return out
    a = rng.standard_normal((64, 128)).astype(np.float32)
    w = rng.standard_normal((96, 128)).astype(np.float32)
    out = nki.simulate_kernel(k, a, w)
    np.testing.assert_allclose(out, a @ w.T, rtol=1e-4, atol=1e-4)   # fp32 operands, fp32 PSUM


def test_nc_matmul_still_rejects_a_psum_tile_the_kernel_allocated():
    @nki.jit
    def k(a):
        out = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.shared_hbm)
        p = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.psum)
        p[...] = nisa.nc_transpose(nl.load(a))
        res = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.psum)
        res[...] = nisa.nc_matmul(p, nl.load(a))
        nl.store(out, value=nl.copy(res))
        return out
    with pytest.raises(BufferKindError, match="stationary"):
        nki.simulate_kernel(k, rng.standard_normal((128, 128)).astype(np.float32))
