"""Tests of trnlab.nki_beta1.isa."""
import numpy as np
import pytest

import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.isa as nisa
import trnlab.nki_beta1.language as nl
from trnlab.errors import BufferKindError


rng = np.random.default_rng(11)


def rand(*shape):
    return rng.uniform(-2.0, 2.0, size=shape).astype(np.float32)


FP32_MIN = np.finfo(np.float32).min


@nki.jit(platform_target="trn2")
def _range_select_kernel(a, lo, hi):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    red_out = nl.ndarray((a.shape[0], 1), dtype=nl.float32, buffer=nl.shared_hbm)
    red = nl.ndarray((a.shape[0], 1), dtype=nl.float32, buffer=nl.sbuf)
    sel = nisa.range_select(on_true_tile=nl.load(a), comp_op0=nl.greater_equal, comp_op1=nl.less,
                            bound0=nl.load(lo), bound1=nl.load(hi), reduce_cmd=nisa.reduce_cmd.reset_reduce,
                            reduce_res=red, range_start=4)
    nl.store(out, value=sel)
    nl.store(red_out, value=red)
    return out, red_out


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


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


def test_select_reduce_new_tile_and_max_reduce():
    @nki.jit
    def k(pred, a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        red_out = nl.ndarray((a.shape[0], 1), dtype=nl.float32, buffer=nl.shared_hbm)
        dst = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        red = nl.ndarray((a.shape[0], 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.select_reduce(dst=dst, predicate=nl.load(pred), on_true=nl.load(a), on_false=-5.0,
                           reduce_res=red, reduce_cmd=nisa.reduce_cmd.reset_reduce)
        nl.store(out, value=dst)
        nl.store(red_out, value=red)
        return out, red_out
    pred = (rng.uniform(size=(64, 48)) > 0.5).astype(np.uint8)
    a = rand(64, 48)
    out, red = nki.simulate_kernel(k, pred, a)
    ref = np.where(pred != 0, a, np.float32(-5.0))
    np.testing.assert_array_equal(out, ref)                       # a pure select: exact
    np.testing.assert_array_equal(red[:, 0], ref.max(axis=1))     # max is exact


def test_select_reduce_reverse_pred_tile_on_false():
    @nki.jit
    def k(pred, a, f):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        dst = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.select_reduce(dst=dst, predicate=nl.load(pred), on_true=nl.load(a), on_false=nl.load(f),
                           reverse_pred=True)
        nl.store(out, value=dst)
        return out
    pred = (rng.uniform(size=(32, 16)) > 0.3).astype(np.uint8)
    a, f = rand(32, 16), rand(32, 1)
    out = nki.simulate_kernel(k, pred, a, f)
    np.testing.assert_array_equal(out, np.where(pred == 0, a, f))


def test_range_select_matches_numpy():
    a = rand(16, 40)
    lo = rng.integers(0, 20, size=(16, 1)).astype(np.float32)
    hi = lo + rng.integers(1, 20, size=(16, 1)).astype(np.float32)
    out, red = nki.simulate_kernel(_range_select_kernel, a, lo, hi)
    idx = 4 + np.arange(40, dtype=np.float32)[None, :]
    ref = np.where((idx >= lo) & (idx < hi), a, FP32_MIN)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(red[:, 0], ref.max(axis=1))


def test_range_select_needs_trn2():
    from trnlab.errors import TrnlabError
    k = nki.jit(_range_select_kernel.fn, platform_target="trn1")
    with pytest.raises(TrnlabError, match="range_select"):
        nki.simulate_kernel(k, rand(8, 8), np.zeros((8, 1), np.float32), np.ones((8, 1), np.float32))


def test_nc_stream_shuffle_in_place_with_keep():
    mask = [(i + 5) % 32 for i in range(32)]
    mask[3] = 255                        # partition 3 of each quadrant keeps dst
    @nki.jit
    def k(a, b):
        out = nl.ndarray(b.shape, dtype=b.dtype, buffer=nl.shared_hbm)
        dst = nl.load(b)
        nisa.nc_stream_shuffle(src=nl.load(a), dst=dst, shuffle_mask=mask)
        nl.store(out, value=dst)
        return out
    a, b = rand(64, 8), rand(64, 8)
    out = nki.simulate_kernel(k, a, b)
    ref = b.copy()
    for j in range(64):
        if mask[j % 32] != 255:
            ref[j] = a[(j // 32) * 32 + mask[j % 32]]
    np.testing.assert_array_equal(out, ref)


def test_tensor_scalar_cumulative_is_a_scan():
    @nki.jit(platform_target="trn2")
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        out2 = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        t = nl.load(a)
        c = nisa.tensor_scalar_cumulative(t, op0=nl.multiply, op1=nl.add, imm0=2.0)
        nl.store(out, value=c)
        m = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.tensor_scalar_cumulative(t, op0=nl.add, op1=nl.maximum, imm0=1.0, imm1=0.5,
                                      reduce_cmd=nisa.reduce_cmd.load_reduce, dst=m)
        nl.store(out2, value=m)
        return out, out2
    a = rand(32, 24)
    out, out2 = nki.simulate_kernel(k, a)
    # sequential fp32 accumulation as the engine does; cumsum in fp32 may order differently: rtol 1e-5
    np.testing.assert_allclose(out, np.cumsum(2.0 * a, axis=1, dtype=np.float32), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out2, np.maximum.accumulate(np.maximum(a + 1.0, 0.5), axis=1))


def test_local_gather_names_itself():
    @nki.jit
    def k(a):
        nisa.local_gather(nl.load(a), None)
        return a
    with pytest.raises(NotImplementedError, match="local_gather"):
        nki.simulate_kernel(k, rand(8, 8))


def test_beta1_isa_dropout():
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, value=nisa.dropout(nl.load(a), prob=0.25))
        return out
    a = rng.uniform(1.0, 2.0, size=(128, 128)).astype(np.float32)
    out = nki.simulate_kernel(k, a)
    dropped = out == 0
    assert abs(dropped.mean() - 0.25) < 0.02          # 16384 draws: sigma 0.0034
    np.testing.assert_array_equal(out[~dropped], a[~dropped])


# --- Beta 1: bn_stats honours a mask over its input (a partial last chunk of a wide row) ----------------
def test_b1_bn_stats_mask_limits_the_partial_chunk():
    width, chunk = 700, 512                    # chunks of 512 and 188 elements

    @nki.jit
    def mean_var(x):
        out = nl.ndarray((128, 2), dtype=nl.float32, buffer=nl.shared_hbm)
        ip, jf = nl.arange(128)[:, None], nl.arange(chunk)[None, :]
        t = nl.load(x)
        stats = nl.ndarray((128, 12), dtype=nl.float32)
        for j in nl.affine_range(2):
            stats[ip, j * 6 + nl.arange(6)[None, :]] = nisa.bn_stats(
                t[ip, j * chunk + jf], mask=(j * chunk + jf < width), dtype=nl.float32)
        nl.store(out, nisa.bn_aggr(stats))
        return out

    x = randn(128, width)
    got = nki.simulate_kernel(mean_var, x)
    np.testing.assert_allclose(got[:, 0], x.mean(axis=1), rtol=1e-5, atol=1e-6)   # fp32 statistics
    np.testing.assert_allclose(got[:, 1], x.var(axis=1), rtol=1e-4, atol=1e-6)


# --- Beta 1: affine_select straight from a matmul's PSUM tile (causal mask) ------------------------------
def test_b1_affine_select_reads_a_psum_tile():
    @nki.jit
    def causal_scores(qT, kT):
        n = qT.shape[1]
        out = nl.ndarray((n, n), dtype=nl.float32, buffer=nl.shared_hbm)
        ps = nl.zeros((n, n), dtype=nl.float32, buffer=nl.psum)
        ps += nisa.nc_matmul(nl.load(qT), nl.load(kT))
        ip, jf = nl.mgrid[0:n, 0:n]
        masked = nisa.affine_select(pred=(ip >= jf), on_true_tile=ps[ip, jf], on_false_value=-1e4,
                                    dtype=nl.float32)
        nl.store(out, masked)
        return out

    qT, kT = randn(16, 32), randn(16, 32)
    want = np.where(np.tril(np.ones((32, 32), bool)), qT.T @ kT, -1e4)
    np.testing.assert_allclose(nki.simulate_kernel(causal_scores, qT, kT), want, rtol=1e-4, atol=1e-4)
