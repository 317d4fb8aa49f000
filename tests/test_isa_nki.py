"""The current front end's nki.isa wrappers: real B2-style kernels through nki.simulate, each checked
against numpy (tolerances next to the assertions)."""
import inspect

import ml_dtypes
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import OutOfBoundsError, PartitionError


def test_indirect_gather_with_oob_skip():
    @nki.jit
    def gather(data, indices):
        P, F = indices.shape[0], data.shape[1]
        out = nl.ndarray((P, F), dtype=data.dtype, buffer=nl.shared_hbm)
        idx = nl.ndarray((P, 1), dtype=nl.uint32, buffer=nl.sbuf)
        nisa.dma_copy(dst=idx, src=indices)
        dst = nl.ndarray((P, F), dtype=data.dtype, buffer=nl.sbuf)
        nisa.memset(dst=dst, value=-1.0)
        nisa.dma_copy(dst=dst, src=data.ap(pattern=[[F, P], [1, F]], vector_offset=idx, indirect_dim=0),
                      oob_mode=nisa.oob_mode.skip)
        nisa.dma_copy(dst=out, src=dst)
        return out

    data = np.arange(40, dtype=np.float32).reshape(10, 4)
    idx = np.array([[3], [0], [9], [12]], dtype=np.uint32)
    got = nki.simulate(gather)(data, idx)
    np.testing.assert_array_equal(got[:3], data[[3, 0, 9]])
    np.testing.assert_array_equal(got[3], -1.0)                       # index 12 skipped, row untouched


def test_indirect_gather_oob_error_names_the_kernel_line():
    @nki.jit
    def gather(data, indices):
        out = nl.ndarray((2, 4), dtype=data.dtype, buffer=nl.shared_hbm)
        idx = nl.ndarray((2, 1), dtype=nl.int32, buffer=nl.sbuf)
        nisa.dma_copy(dst=idx, src=indices)
        dst = nl.ndarray((2, 4), dtype=data.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=dst, src=data.ap(pattern=[[4, 2], [1, 4]], vector_offset=idx, indirect_dim=0))
        nisa.dma_copy(dst=out, src=dst)
        return out

    line = inspect.getsourcelines(gather.fn)[1] + 6
    with pytest.raises(OutOfBoundsError) as err:
        nki.simulate(gather)(np.zeros((10, 4), np.float32), np.array([[1], [11]], np.int32))
    assert "test_isa_nki.py" in str(err.value) and "11" in str(err.value)
    assert f":{line}" in str(err.value)


def test_indirect_scatter():
    @nki.jit
    def scatter(src_data, indices, output):
        P, F = src_data.shape
        src = nl.ndarray((P, F), dtype=src_data.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=src, src=src_data)
        idx = nl.ndarray((P, 1), dtype=nl.uint32, buffer=nl.sbuf)
        nisa.dma_copy(dst=idx, src=indices)
        nisa.dma_copy(dst=output.ap(pattern=[[F, P], [1, F]], vector_offset=idx, indirect_dim=0), src=src)
        return output

    out = np.zeros((6, 3), np.float32)
    src = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
    got = nki.simulate(scatter)(src, np.array([[4], [1]], np.uint32), out)
    want = np.zeros((6, 3), np.float32)
    want[[4, 1]] = src
    np.testing.assert_array_equal(got, want)


def test_scalar_offset_moves_the_access_pattern():
    @nki.jit
    def row(data, where):
        out = nl.ndarray((1, 4), dtype=data.dtype, buffer=nl.shared_hbm)
        reg = nl.ndarray((1, 1), dtype=nl.int32, buffer=nl.sbuf)
        nisa.dma_copy(dst=reg, src=where)
        t = nl.ndarray((1, 4), dtype=data.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=data.ap(pattern=[[4, 1], [1, 4]], scalar_offset=reg, indirect_dim=0))
        nisa.dma_copy(dst=out, src=t)
        return out

    data = np.arange(32, dtype=np.float32).reshape(8, 4)
    np.testing.assert_array_equal(nki.simulate(row)(data, np.array([[5]], np.int32)), data[5:6])


def test_double_row_fp8_matmul_contracts_over_256():
    @nki.jit
    def mm(a, b):
        out = nl.ndarray((16, 64), dtype=nl.float32, buffer=nl.shared_hbm)
        s = nl.ndarray((128, 2, 16), dtype=nl.float8_e4m3, buffer=nl.sbuf)
        mv = nl.ndarray((128, 2, 64), dtype=nl.float8_e4m3, buffer=nl.sbuf)
        nisa.dma_copy(dst=s, src=a)
        nisa.dma_copy(dst=mv, src=b)
        ps = nl.ndarray((16, 64), dtype=nl.float32, buffer=nl.psum)
        nisa.nc_matmul(dst=ps, stationary=s, moving=mv, perf_mode=nisa.matmul_perf_mode.double_row)
        res = nl.ndarray((16, 64), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_copy(dst=res, src=ps)
        nisa.dma_copy(dst=out, src=res)
        return out

    rng = np.random.default_rng(0)
    a = rng.uniform(-2, 2, (128, 2, 16)).astype(ml_dtypes.float8_e4m3)
    b = rng.uniform(-2, 2, (128, 2, 64)).astype(ml_dtypes.float8_e4m3)
    got = nki.simulate(mm, target="trn2")(a, b)
    want = np.einsum("kim,kin->mn", a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)       # fp32 accumulation of 256 products


def test_vector_engine_transpose_and_engine_choice():
    @nki.jit
    def tr(x):
        out = nl.ndarray((x.shape[1], x.shape[0]), dtype=x.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        r = nl.ndarray((x.shape[1], x.shape[0]), dtype=x.dtype, buffer=nl.sbuf)
        nisa.nc_transpose(dst=r, data=t)                      # SBUF -> SBUF: Vector Engine
        nisa.dma_copy(dst=out, src=r)
        return out

    x = np.arange(32 * 20, dtype=np.float32).reshape(32, 20)
    np.testing.assert_array_equal(nki.simulate(tr)(x), x.T)
    assert tr.last_run.machine.stats.by_engine["vector"] == 1
    with pytest.raises(Exception, match="32"):
        nki.simulate(tr)(np.zeros((40, 20), np.float32))


def test_layernorm_stats_with_bn_stats_and_bn_aggr():
    @nki.jit
    def stats(x):
        P, F = x.shape
        out = nl.ndarray((P, 2), dtype=nl.float32, buffer=nl.shared_hbm)
        t = nl.ndarray((P, F), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        n = F // 512
        st = nl.ndarray((P, 6 * n), dtype=nl.float32, buffer=nl.sbuf)
        for i in range(n):
            nisa.bn_stats(dst=st[:, 6 * i:6 * i + 6], data=t[:, 512 * i:512 * (i + 1)])
        ag = nl.ndarray((P, 2), dtype=nl.float32, buffer=nl.sbuf)
        nisa.bn_aggr(dst=ag, data=st)
        nisa.dma_copy(dst=out, src=ag)
        return out

    x = np.random.default_rng(1).normal(3, 2, (128, 2048)).astype(np.float32)
    got = nki.simulate(stats)(x)
    np.testing.assert_allclose(got[:, 0], x.mean(1), rtol=1e-5)       # fp32 sums of 2048 values
    np.testing.assert_allclose(got[:, 1], x.var(1), rtol=1e-4)


def test_top16_by_max8_and_match_replace8_cascade():
    @nki.jit
    def top16(x):
        P, F = x.shape
        out = nl.ndarray((P, 16), dtype=nl.float32, buffer=nl.shared_hbm)
        idx_out = nl.ndarray((P, 8), dtype=nl.uint32, buffer=nl.shared_hbm)
        t = nl.ndarray((P, F), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        best = nl.ndarray((P, 16), dtype=nl.float32, buffer=nl.sbuf)
        idx = nl.ndarray((P, 8), dtype=nl.uint32, buffer=nl.sbuf)
        nisa.max8(dst=best[:, 0:8], src=t)
        nisa.nc_find_index8(dst=idx, data=t, vals=best[:, 0:8])
        rest = nl.ndarray((P, F), dtype=x.dtype, buffer=nl.sbuf)
        nisa.nc_match_replace8(dst=rest, data=t, vals=best[:, 0:8], imm=-1e30)
        nisa.max8(dst=best[:, 8:16], src=rest)
        nisa.dma_copy(dst=out, src=best)
        nisa.dma_copy(dst=idx_out, src=idx)
        return out, idx_out

    x = np.random.default_rng(2).permutation(128 * 100).reshape(128, 100).astype(np.float32)
    vals, idx = nki.simulate(top16)(x)
    np.testing.assert_array_equal(vals, -np.sort(-x, axis=1)[:, :16])
    np.testing.assert_array_equal(idx, np.argsort(-x, axis=1)[:, :8])


def test_cumsum_with_tensor_tensor_scan():
    @nki.jit
    def cumsum(x):
        out = nl.ndarray(x.shape, dtype=nl.float32, buffer=nl.shared_hbm)
        t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        ones = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.memset(dst=ones, value=1.0)
        r = nl.ndarray(x.shape, dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor_scan(dst=r, data0=ones, data1=t, initial=0.0, op0=nl.multiply, op1=nl.add)
        nisa.dma_copy(dst=out, src=r)
        return out

    x = np.random.default_rng(3).uniform(-1, 1, (128, 300)).astype(np.float32)
    np.testing.assert_allclose(nki.simulate(cumsum)(x), np.cumsum(x, axis=1), rtol=1e-5, atol=1e-5)


def test_int32_tensor_tensor_defaults_to_exact_gpsimd():
    @nki.jit
    def add(a, b):
        out = nl.ndarray(a.shape, dtype=nl.int32, buffer=nl.shared_hbm)
        ta, tb = (nl.ndarray(a.shape, dtype=nl.int32, buffer=nl.sbuf) for _ in range(2))
        nisa.dma_copy(dst=ta, src=a)
        nisa.dma_copy(dst=tb, src=b)
        tc = nl.ndarray(a.shape, dtype=nl.int32, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=tc, data1=ta, data2=tb, op=nl.add)
        nisa.dma_copy(dst=out, src=tc)
        return out

    a = np.full((4, 4), 2 ** 24 + 1, np.int32)
    np.testing.assert_array_equal(nki.simulate(add)(a, a), a + a)      # fp32 would round 2^25 + 2
    assert add.last_run.machine.stats.by_engine["gpsimd"] == 1


def test_dropout_and_rng_are_deterministic_across_runs():
    @nki.jit
    def drop(x):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        seed = nl.ndarray((1, 1), dtype=nl.uint32, buffer=nl.sbuf)
        nisa.memset(dst=seed, value=42)
        nisa.set_rng_seed(src_seeds=seed)
        r = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dropout(dst=r, data=t, prob=0.25)
        nisa.dma_copy(dst=out, src=r)
        return out

    x = np.ones((128, 512), np.float32)
    a, b = nki.simulate(drop)(x), nki.simulate(drop)(x)
    np.testing.assert_array_equal(a, b)
    assert abs(float((a == 0).mean()) - 0.25) < 0.01                  # 65536 draws: sd 1.7e-3


def test_rule_violation_through_nki_names_the_kernel_line():
    @nki.jit
    def bad(x):
        out = nl.ndarray((64, 8), dtype=x.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray((128, 8), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        r = nl.ndarray((64, 8), dtype=x.dtype, buffer=nl.sbuf)
        nisa.tensor_copy(dst=r, src=t[32:96, :])
        nisa.dma_copy(dst=out, src=r)
        return out

    with pytest.raises(PartitionError) as err:
        nki.simulate(bad)(np.zeros((128, 8), np.float32))
    msg = str(err.value)
    assert "nisa.tensor_copy" in msg and "starting at partition 32" in msg and "test_isa_nki.py:" in msg


def test_unmodelled_apis_raise_not_implemented():
    import inspect
    for name in ("quantize_mx", "nc_matmul_mx", "local_gather"):   # sendrecv: tests/test_frontend_lnc.py
        fn = getattr(nisa, name)
        required = [p for p in inspect.signature(fn).parameters.values() if p.default is p.empty]
        with pytest.raises(NotImplementedError, match=name):
            fn(*[None] * len(required))   # a well-formed call (a malformed one is an ApiArgumentError)


def test_tensor_scalar_reduce_and_select_reduce_wrappers():
    @nki.jit
    def k(x, p):
        P, F = x.shape
        out = nl.ndarray((P, 2), dtype=nl.float32, buffer=nl.shared_hbm)
        t = nl.ndarray((P, F), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        pr = nl.ndarray((P, F), dtype=nl.uint8, buffer=nl.sbuf)
        nisa.dma_copy(dst=pr, src=p)
        res = nl.ndarray((P, 2), dtype=nl.float32, buffer=nl.sbuf)
        y = nl.ndarray((P, F), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar_reduce(dst=y, data=t, op0=nl.multiply, operand0=2.0, reduce_op=nl.add,
                                  reduce_res=res[:, 0:1])
        z = nl.ndarray((P, F), dtype=nl.float32, buffer=nl.sbuf)
        nisa.select_reduce(dst=z, predicate=pr, on_true=t, on_false=-100.0, reduce_res=res[:, 1:2],
                           reduce_cmd=nisa.reduce_cmd.reset_reduce)
        nisa.dma_copy(dst=out, src=res)
        return out

    rng = np.random.default_rng(4)
    x, p = rng.uniform(-1, 1, (64, 40)).astype(np.float32), rng.integers(0, 2, (64, 40)).astype(np.uint8)
    got = nki.simulate(k)(x, p)
    np.testing.assert_allclose(got[:, 0], 2 * x.sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[:, 1], np.where(p != 0, x, -100.0).max(1))
