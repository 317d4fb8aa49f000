"""Regression tests for front-end gaps found by running AWS's public NKI kernels on trnlab.

Each test is a small kernel of our own that exercises the same API and semantics the public kernel
relied on, checked against numpy."""
import warnings

import numpy as np
import pytest

import trnlab.nki as cnki
import trnlab.nki.isa as cisa
import trnlab.nki.language as cnl
import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.isa as nisa
import trnlab.nki_beta1.language as nl
import trnlab.nki_beta1.typing as nt
from trnlab.errors import TrnlabWarning

rng = np.random.default_rng(7)


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


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

    x = rand(128, width)
    got = nki.simulate_kernel(mean_var, x)
    np.testing.assert_allclose(got[:, 0], x.mean(axis=1), rtol=1e-5, atol=1e-6)   # fp32 statistics
    np.testing.assert_allclose(got[:, 1], x.var(axis=1), rtol=1e-4, atol=1e-6)


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

    x = rand(16, 9, 12)
    want = x.reshape(16, 3, 3, 4, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(nki.simulate_kernel(pool3, x), want)      # max is exact


def test_current_sum_over_a_middle_axis():
    @cnki.jit
    def middle_sum(x):
        t = cnl.load(x)                                    # [P, A, B]
        out = cnl.ndarray((x.shape[0], x.shape[2]), dtype=cnl.float32, buffer=cnl.shared_hbm)
        cnl.store(out, cnl.sum(t, axis=1))
        return out

    x = rand(8, 5, 6)
    np.testing.assert_allclose(cnki.simulate(middle_sum)(x), x.sum(axis=1), rtol=1e-5, atol=1e-5)


# --- Beta 1: a rank-1 HBM view loads as a [n, 1] tile (per-partition scale column) -----------------------
def test_b1_load_of_a_column_gives_a_partition_vector():
    @nki.jit
    def scale_rows(x, s):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        col = nl.load(s[0:64, 2])                         # int index drops the HBM dim -> [64, 1] tile
        nl.store(out, nisa.activation(op=nl.exp, data=nl.load(x), scale=col))
        return out

    x, s = rand(64, 10), rand(64, 4)
    got = nki.simulate_kernel(scale_rows, x, s)
    np.testing.assert_allclose(got, np.exp(x * s[:, 2:3]), rtol=1e-5, atol=1e-6)


def test_b1_store_into_a_column():
    @nki.jit
    def row_sums(x, out):
        nl.store(out[0:32, 1], nl.sum(nl.load(x), axis=1))

    x, out = rand(32, 7), np.zeros((32, 3), np.float32)
    nki.simulate_kernel(row_sums, x, out)                 # modified numpy inputs are written back
    np.testing.assert_allclose(out[:, 1], x.sum(axis=1), rtol=1e-5, atol=1e-5)
    assert not out[:, [0, 2]].any()


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

    qT, kT = rand(16, 32), rand(16, 32)
    want = np.where(np.tril(np.ones((32, 32), bool)), qT.T @ kT, -1e4)
    np.testing.assert_allclose(nki.simulate_kernel(causal_scores, qT, kT), want, rtol=1e-4, atol=1e-4)


# --- Beta 1: nki.benchmark accepts nt.tensor[[shape], dtype] placeholders --------------------------------
def test_b1_benchmark_with_typed_placeholders():
    @nki.jit
    def double(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, nl.load(a) * 2)
        return out

    bench = nki.benchmark(warmup=2, iters=3)(double)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # the benchmark prints its summary
        out = bench(nt.tensor[[128, 256], nl.bfloat16])
    assert out.shape == (128, 256) and out.dtype == np.dtype(nl.bfloat16)
    assert np.isfinite(out.astype(np.float32)).all()
    # by hand (trn2): load and store of [128, 256] bf16 each cost ~1.3 us plus 8 partitions x 512 B per queue at
    # 23 B/ns x 0.44 x 512 / (512 + 128); the bf16 multiply of 256 elements per partition takes 256 Vector
    # cycles at most and 64 at least (NC-v3 up to 4x perf mode), plus the 60-cycle result latency, at 0.96 GHz
    dma_s = 1.3e-6 + 8 * 512 / (23e9 * 0.44 * 512 / (512 + 128))
    latency_s = bench.benchmark_result.nc_latency.get_latency_percentile(99) * 1e-6
    assert 2 * dma_s + (64 + 60) / 0.96e9 <= latency_s * (1 + 1e-9)
    assert latency_s <= (2 * dma_s + (256 + 60) / 0.96e9) * (1 + 1e-9)


def test_typed_placeholder_is_only_a_shape_and_dtype():
    assert nt.tensor[[4, 8], nl.float32].is_placeholder()
    assert not nt.tensor[4, 8].is_placeholder()           # an annotation, not an input


# --- current: Beta 2 kernels pass nki.jit(platform_target=...) --------------------------------------------
def test_current_platform_target_warns_and_selects_the_chip():
    with pytest.warns(TrnlabWarning, match="platform_target"):
        @cnki.jit(platform_target="trn1")
        def copy_kernel(a):
            out = cnl.ndarray(a.shape, dtype=a.dtype, buffer=cnl.shared_hbm)
            t = cnl.ndarray(a.shape, dtype=a.dtype, buffer=cnl.sbuf)
            cisa.dma_copy(dst=t, src=a)
            cisa.dma_copy(dst=out, src=t)
            return out

    a = rand(16, 16)
    np.testing.assert_array_equal(copy_kernel(a), a)
    assert copy_kernel.last_run.machine.chip.name == "trn1"
