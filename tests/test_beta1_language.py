"""Beta 1 front end (neuronxcc.nki): every call against numpy, masks, par_dim blocks, accumulation."""
import numpy as np
import pytest
from scipy import special

import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.compiler as ncc
import trnlab.nki_beta1.isa as nisa
import trnlab.nki_beta1.language as nl
from trnlab.errors import NkiValidationError, OutOfBoundsError

rng = np.random.default_rng(0)


def rand(*shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def run(kernel, *args, grid=None):
    k = kernel[grid] if grid is not None else kernel
    return nki.simulate_kernel(k, *args)


# --- element-wise calls (fp32: exact up to fp32 rounding of the math) ---------------------------------
UNARY = {
    "exp": np.exp, "tanh": np.tanh, "sigmoid": special.expit, "relu": lambda x: np.maximum(x, 0),
    "square": np.square, "abs": np.abs, "negative": np.negative, "sin": np.sin, "cos": np.cos,
    "gelu": lambda x: 0.5 * x * (1 + special.erf(x / np.sqrt(2))), "silu": lambda x: x * special.expit(x),
    "erf": special.erf, "sign": np.sign, "arctan": np.arctan, "softplus": lambda x: np.logaddexp(0, x),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_activation_matches_numpy(name):
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, value=getattr(nl, name)(nl.load(a)))
        return out
    a = rand(128, 64)
    np.testing.assert_allclose(run(k, a), UNARY[name](a), rtol=1e-5, atol=1e-6)


def test_positive_domain_unary():
    @nki.jit
    def k(a):
        out = nl.ndarray((4, 128, 32), dtype=a.dtype, buffer=nl.shared_hbm)
        t = nl.load(a)
        for i, fn in enumerate((nl.log, nl.sqrt, nl.rsqrt, nl.reciprocal)):
            nl.store(out[i], value=fn(t))
        return out
    a = rand(128, 32, lo=0.1, hi=4.0)
    out = run(k, a)
    for i, ref in enumerate((np.log(a), np.sqrt(a), 1 / np.sqrt(a), 1 / a)):
        np.testing.assert_allclose(out[i], ref, rtol=1e-5)


BINARY = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
          "maximum": np.maximum, "minimum": np.minimum, "greater": np.greater, "less_equal": np.less_equal,
          "equal": np.equal, "power": np.power}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_tile_tile_and_scalar(name):
    @nki.jit
    def k(a, b):
        out = nl.ndarray((3,) + a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        x, y = nl.load(a), nl.load(b)
        fn = getattr(nl, name)
        nl.store(out[0], value=fn(x, y))
        nl.store(out[1], value=fn(x, 0.5))
        nl.store(out[2], value=fn(2.0, x))
        return out
    a, b = rand(128, 48, lo=0.2, hi=2), rand(128, 48, lo=0.2, hi=2)
    out = run(k, a, b)
    ref = BINARY[name]
    np.testing.assert_allclose(out[0], ref(a, b).astype(np.float32), rtol=1e-5)
    np.testing.assert_allclose(out[1], ref(a, np.float32(0.5)).astype(np.float32), rtol=1e-5)
    np.testing.assert_allclose(out[2], ref(np.float32(2.0), a).astype(np.float32), rtol=1e-5)


def test_broadcast_free_and_partition_and_operators():
    @nki.jit
    def k(a, col, row):
        out = nl.ndarray((3,) + a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        x = nl.load(a)
        nl.store(out[0], value=nl.multiply(x, nl.load(col)))      # [P, 1] -> tensor_scalar
        nl.store(out[1], value=nl.add(x, nl.load(row)))           # [1, F] -> partition broadcast
        nl.store(out[2], value=(x * 2 + 1) - x / 4)
        return out
    a, col, row = rand(128, 64), rand(128, 1), rand(1, 64)
    out = run(k, a, col, row)
    np.testing.assert_allclose(out[0], a * col, rtol=1e-6)
    np.testing.assert_allclose(out[1], a + row, rtol=1e-6)
    np.testing.assert_allclose(out[2], (a * 2 + 1) - a / 4, rtol=1e-6, atol=1e-7)


def test_result_keeps_input_dtype_and_rounds_bf16():
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=nl.float32, buffer=nl.shared_hbm)
        t = nl.load(a)
        e = nl.exp(t)
        assert e.dtype == nl.bfloat16
        nl.store(out, value=e)
        return out
    a = nl.static_cast(rand(128, 32), nl.bfloat16)
    ref = nl.static_cast(np.exp(a.astype(np.float32)), nl.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(run(k, a), ref)


def test_reductions_and_mean():
    @nki.jit
    def k(a):
        out = nl.ndarray((5, 128, 1), dtype=a.dtype, buffer=nl.shared_hbm)
        t = nl.load(a)
        for i, fn in enumerate((nl.sum, nl.max, nl.min, nl.mean, nl.prod)):
            nl.store(out[i], value=fn(t, axis=1, keepdims=True))
        return out
    a = rand(128, 16, lo=0.5, hi=1.5)
    out = run(k, a)
    for i, ref in enumerate((a.sum(1), a.max(1), a.min(1), a.mean(1), a.prod(1))):
        np.testing.assert_allclose(out[i][:, 0], ref, rtol=1e-5)


def test_softmax_rms_norm_where_copy_transpose():
    @nki.jit
    def k(a, w):
        out = nl.ndarray((5, 128, 128), dtype=a.dtype, buffer=nl.shared_hbm)
        t = nl.load(a)
        nl.store(out[0], value=nl.softmax(t, axis=1))
        nl.store(out[1], value=nl.rms_norm(t, nl.load(w), axis=1, n=128))
        nl.store(out[2], value=nl.where(nl.greater(t, 0.0), t, -1.0))
        nl.store(out[3], value=nl.copy(nl.transpose(t)))
        nl.store(out[4], value=nl.copy(nl.matmul(t, t)))
        return out
    a, w = rand(128, 128), rand(1, 128)
    out = run(k, a, w)
    e = np.exp(a - a.max(1, keepdims=True))
    np.testing.assert_allclose(out[0], e / e.sum(1, keepdims=True), rtol=1e-5)
    rms = a / np.sqrt((a * a).mean(1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(out[1], rms, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out[2], np.where(a > 0, a, -1.0))
    np.testing.assert_array_equal(out[3], a.T)
    np.testing.assert_allclose(out[4], a @ a, rtol=1e-4, atol=1e-4)


def test_iota_affine_select_and_mgrid_fields():
    @nki.jit
    def k(a):
        out = nl.ndarray((2, 128, 64), dtype=nl.float32, buffer=nl.shared_hbm)
        g = nl.mgrid[0:128, 0:64]
        nl.store(out[0], value=nisa.iota(g.p * 64 + 2 * g.x + 1, dtype=nl.float32))
        nl.store(out[1], value=nisa.affine_select(g.p - g.x >= 0, nl.load(a), nl.fp32.min))
        return out
    a = rand(128, 64)
    out = run(k, a)
    np.testing.assert_array_equal(out[0], np.arange(128)[:, None] * 64 + 2 * np.arange(64)[None, :] + 1)
    np.testing.assert_array_equal(out[1], np.where(np.tri(128, 64, dtype=bool), a, np.finfo(np.float32).min))


# --- indexing ---------------------------------------------------------------------------------------------
def test_affine_strided_index_is_a_view():
    @nki.jit
    def k(a):
        out = nl.ndarray((128, 32), dtype=a.dtype, buffer=nl.shared_hbm)
        i_p, i_f = nl.arange(128)[:, None], nl.arange(32)[None, :]
        t = nl.load(a[i_p, 2 * i_f + 1])                  # odd columns
        u = nl.ndarray((128, 64), dtype=a.dtype)
        u[i_p, 2 * i_f] = t                               # strided write into a tile
        nl.store(out[i_p, i_f], value=u[i_p, 2 * i_f])
        return out
    a = rand(128, 64)
    np.testing.assert_array_equal(run(k, a), a[:, 1::2])


def test_transposed_hbm_access_and_load_transpose2d():
    @nki.jit
    def k(a):
        out = nl.ndarray((2, 64, 128), dtype=a.dtype, buffer=nl.shared_hbm)
        i_p, i_f = nl.arange(64)[:, None], nl.arange(128)[None, :]
        nl.store(out[0], value=nl.load(a[i_f, i_p]))
        nl.store(out[1], value=nl.load_transpose2d(a))
        return out
    a = rand(128, 64)
    out = run(k, a)
    np.testing.assert_array_equal(out[0], a.T)
    np.testing.assert_array_equal(out[1], a.T)


def test_static_out_of_bound_error_uses_aws_wording():
    @nki.jit
    def k(a):
        out = nl.ndarray((128, 4096), dtype=a.dtype, buffer=nl.shared_hbm)
        i_p, i_f = nl.arange(128)[:, None], nl.arange(4096)[None, :]
        nl.store(out[i_p, i_f], value=nl.load(a[i_p, i_f]))
        return out
    with pytest.raises(OutOfBoundsError, match=r"Out-of-bound access for tensor `a` on dimension 1: index range "
                                                r"\[0, 4095\] exceed dimension size of 4000"):
        run(k, np.zeros((128, 4000), np.float32))


def test_mixing_basic_and_advanced_indexing_is_rejected():
    @nki.jit
    def k(a):
        i_p = nl.arange(128)[:, None]
        return nl.load(a[i_p, 0:64])
    with pytest.raises(NkiValidationError, match="Mixing basic tensor indexing and advanced"):
        run(k, np.zeros((128, 64), np.float32))


# --- masks --------------------------------------------------------------------------------------------
def test_rectangular_mask_covers_out_of_bound_tail():
    @nki.jit
    def k(a):
        n, f = a.shape
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        i_p, i_f = nl.arange(128)[:, None], nl.arange(f)[None, :]
        for t in nl.affine_range((n + 127) // 128):
            rows = t * 128 + i_p
            x = nl.load(a[rows, i_f], mask=(rows < n))
            y = nl.exp(x, mask=(rows < n))
            nl.store(out[rows, i_f], value=y, mask=(rows < n))
        return out
    a = rand(300, 40)
    np.testing.assert_allclose(run(k, a), np.exp(a), rtol=1e-6)
    # the masked region shrinks the instructions: the last tile moves 44 rows, so the DMAs move exactly the
    # 300 x 40 fp32 input once and the output once
    stats = k.last_run.machine.stats
    assert stats.dma_bytes == 2 * 300 * 40 * 4
    assert stats.instructions["dma_copy"] == 2 * 3 and stats.instructions["activation"] == 3


def test_triangular_mask_writes_only_lower_triangle():
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        i_p, i_f = nl.mgrid[0:128, 0:128]
        z = nl.zeros((128, 128), nl.float32)
        z[i_p, i_f] = nl.multiply(nl.load(a), 3.0, mask=(i_f <= i_p))
        nl.store(out, value=z)
        return out
    a = rand(128, 128)
    np.testing.assert_array_equal(run(k, a), np.tril(a * np.float32(3.0)))


def test_mask_combined_with_and():
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        i_p, i_f = nl.mgrid[0:64, 0:64]
        z = nl.full((64, 64), -5.0, nl.float32)
        z[i_p, i_f] = nl.copy(nl.load(a), mask=((i_p >= 8) & (i_f < 32)))
        nl.store(out, value=z)
        return out
    a = rand(64, 64)
    ref = np.full((64, 64), -5.0, np.float32)
    ref[8:, :32] = a[8:, :32]
    np.testing.assert_array_equal(run(k, a), ref)


# --- par_dim blocks, accumulation, SPMD ---------------------------------------------------------------
def test_par_dim_block_tensor_and_psum_accumulation():
    @nki.jit
    def k(lhsT, rhs):
        kdim, m = lhsT.shape
        n = rhs.shape[1]
        nk = kdim // 128
        out = nl.ndarray((m, n), dtype=nl.float32, buffer=nl.shared_hbm)
        lt = nl.ndarray((nk, nl.par_dim(128), m), dtype=lhsT.dtype, buffer=nl.sbuf)
        rt = nl.ndarray((nk, nl.par_dim(128), n), dtype=rhs.dtype, buffer=ncc.sbuf.mod_alloc(base_addr=0))
        i_p = nl.arange(128)[:, None]
        for t in nl.affine_range(nk):
            lt[t] = nl.load(lhsT[t * 128 + i_p, nl.arange(m)[None, :]])
            rt[t, i_p, nl.arange(n)[None, :]] = nl.load(rhs[t * 128 + i_p, nl.arange(n)[None, :]])
        ps = nl.zeros((m, n), nl.float32, buffer=nl.psum)
        for t in nl.affine_range(nk):
            ps += nisa.nc_matmul(lt[t], rt[t])
        res = nl.zeros((m, n), nl.float32, buffer=nl.psum)
        for t in nl.affine_range(nk):
            res[...] += nl.matmul(lt[t], rt[t], transpose_x=True)
        nl.store(out, value=nl.add(nl.copy(ps), nl.copy(res)))
        return out
    a, b = rand(384, 128), rand(384, 256)
    out = run(k, a, b)
    np.testing.assert_allclose(out, 2 * (a.T @ b), rtol=1e-4, atol=1e-4)
    m = nki.jit(k.fn)
    m(a, b)
    counts = m.last_run.machine.stats.instructions
    assert counts["nc_matmul"] == 6 and counts["tensor_tensor"] == 1   # no extra adds for accumulation


def test_block_tensor_is_not_a_tile():
    @nki.jit
    def k(a):
        buf = nl.zeros((2, nl.par_dim(128), 8), dtype=nl.float32)
        return nl.exp(buf)
    with pytest.raises(NkiValidationError, match="Failed to infer tile from tensor"):
        run(k, np.zeros(1, np.float32))


def test_spmd_grid_program_ids():
    @nki.jit
    def k(a):
        out = a
        i, j = nl.program_id(0), nl.program_id(1)
        assert nl.num_programs() == 6 and nl.num_programs(1) == 3 and nl.program_ndim() == 2
        i_p, i_f = nl.arange(64)[:, None], nl.arange(16)[None, :]
        t = nl.load(a[i * 64 + i_p, j * 16 + i_f])
        nl.store(out[i * 64 + i_p, j * 16 + i_f], value=nl.add(t, i * 10 + j))
        return out
    a = np.zeros((128, 48), np.float32)
    out = run(k, a, grid=(2, 3))
    ref = np.add.outer(np.repeat([0, 10], 64), np.repeat([0, 1, 2], 16)).astype(np.float32)
    np.testing.assert_array_equal(out, ref)


def test_inplace_sbuf_accumulate_and_loop_reduce():
    @nki.jit
    def k(a):
        out = nl.ndarray((2, 128, 32), dtype=a.dtype, buffer=nl.shared_hbm)
        acc = nl.zeros((128, 32), nl.float32)
        mx = nl.full((128, 32), -1e30, nl.float32)
        for t in nl.affine_range(4):
            x = nl.load(a[t])
            acc += x
            mx = nl.loop_reduce(x, op=np.maximum, loop_indices=[t])
        nl.store(out[0], value=acc)
        nl.store(out[1], value=mx)
        return out
    a = rand(4, 128, 32)
    out = run(k, a)
    np.testing.assert_allclose(out[0], a.sum(0), rtol=1e-5)
    np.testing.assert_array_equal(out[1], a.max(0))


def test_assignment_issues_straight_into_the_target():
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray(a.shape, dtype=a.dtype)
        t[...] = nl.load(a)
        u = nl.ndarray(a.shape, dtype=a.dtype)
        u[...] = nl.exp(t)
        nl.store(out, value=u)
        return out
    a = rand(128, 32)
    m = nki.jit(k.fn)
    np.testing.assert_allclose(m(a), np.exp(a), rtol=1e-6)
    assert sum(m.last_run.machine.stats.instructions.values()) == 3   # load, activation, store


def test_indirect_gather_load():
    @nki.jit
    def k(data, idx):
        out = nl.ndarray((64, data.shape[1]), dtype=data.dtype, buffer=nl.shared_hbm)
        i_f = nl.arange(data.shape[1])[None, :]
        ix = nl.load(idx)
        nl.store(out, value=nl.load(data[ix, i_f]))
        return out
    data = rand(200, 16)
    idx = rng.integers(0, 200, size=(64, 1)).astype(np.int32)
    np.testing.assert_array_equal(run(k, data, idx), data[idx[:, 0]])


def test_masked_indirect_gather_and_scatter_keep_only_masked_rows_and_columns():
    @nki.jit
    def k(data, idx):
        out = nl.ndarray((64, 16), dtype=data.dtype, buffer=nl.shared_hbm)
        i_p, i_f = nl.arange(64)[:, None], nl.arange(16)[None, :]
        nl.store(out, value=nl.zeros((64, 16), dtype=data.dtype))
        ix = nl.load(idx)
        g = nl.load(data[ix, i_f], mask=(i_p < 40) & (i_f < 10))
        nl.store(out[i_p, i_f], value=g, mask=(i_p < 40) & (i_f < 10))
        return out
    data = rand(200, 16)
    idx = rng.integers(0, 200, size=(64, 1)).astype(np.int32)
    out = run(k, data, idx)
    np.testing.assert_array_equal(out[:40, :10], data[idx[:40, 0], :10])
    np.testing.assert_array_equal(out[40:], 0)
    np.testing.assert_array_equal(out[:, 10:], 0)

    @nki.jit
    def scatter(table, idx, values):
        ix = nl.load(idx)
        v = nl.load(values)
        i_p, i_f = nl.arange(64)[:, None], nl.arange(16)[None, :]
        nl.store(table[ix, i_f], value=v, mask=(i_p >= 8) & (i_p < 40))
        return table
    table = rand(200, 16)
    before = table.copy()
    uniq = rng.permutation(200)[:64].reshape(64, 1).astype(np.int32)
    values = rand(64, 16)
    after = run(scatter, table, uniq, values)
    want = before.copy()
    want[uniq[8:40, 0]] = values[8:40]
    np.testing.assert_array_equal(after, want)


def test_non_rectangular_mask_on_a_gather_is_refused_by_name():
    @nki.jit
    def k(data, idx):
        out = nl.ndarray((64, 16), dtype=data.dtype, buffer=nl.shared_hbm)
        i_p, i_f = nl.arange(64)[:, None], nl.arange(16)[None, :]
        ix = nl.load(idx)
        nl.store(out, value=nl.load(data[ix, i_f], mask=(i_f <= i_p)))
        return out
    with pytest.raises(NotImplementedError, match="nl.load: an indirect"):
        run(k, rand(200, 16), np.zeros((64, 1), np.int32))


def test_nisa_calls_return_tiles():
    @nki.jit
    def k(a, b):
        out = nl.ndarray((5, 128, 64), dtype=nl.float32, buffer=nl.shared_hbm)
        x, y = nl.load(a), nl.load(b)
        nl.store(out[0], value=nisa.tensor_tensor(x, y, op=np.add))
        nl.store(out[1], value=nisa.tensor_scalar(x, np.multiply, 2.0, op1=np.add, operand1=1.0))
        nl.store(out[2], value=nisa.activation(op=nl.exp, data=x, scale=0.5))
        nl.store(out[3], value=nisa.tensor_copy(nisa.memset((128, 64), 3.0, nl.float32)))
        red = nisa.tensor_reduce(np.add, x, axis=(1,), keepdims=True)
        nl.store(out[4], value=nisa.tensor_scalar(y, np.subtract, red))
        return out
    a, b = rand(128, 64), rand(128, 64)
    out = run(k, a, b)
    np.testing.assert_allclose(out[0], a + b, rtol=1e-6)
    np.testing.assert_allclose(out[1], a * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(out[2], np.exp(0.5 * a), rtol=1e-6)
    np.testing.assert_array_equal(out[3], np.full((128, 64), 3.0))
    np.testing.assert_allclose(out[4], b - a.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_nc_version_and_unsupported_api():
    assert int(nisa.get_nc_version()) in (2, 3, 4)
    assert nl.tile_size.pmax == 128 and nl.tile_size.gemm_moving_fmax == 512
    with pytest.raises(NotImplementedError, match="all_reduce"):
        nl.all_reduce(None, np.add, program_axes=[0])


def test_newer_vector_instructions_scan_bn_max8_rand_and_masked_matmul():
    @nki.jit
    def k(a, b):
        out = nl.ndarray((4, 64, 64), dtype=nl.float32, buffer=nl.shared_hbm)
        st = nl.ndarray((64, 2), dtype=nl.float32, buffer=nl.shared_hbm)
        m8 = nl.ndarray((64, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        x, y = nl.load(a), nl.load(b)
        nl.store(out[0], value=nisa.tensor_tensor_scan(x, y, 0.0, np.multiply, np.add))
        nl.store(st, value=nisa.bn_aggr(nisa.bn_stats(x)))
        nl.store(m8, value=nisa.max8(x))
        nl.store(out[1], value=nl.rand((64, 64), dtype=nl.float32))
        i_p, i_f = nl.mgrid[0:64, 0:64]
        q = nl.zeros((64, 64), nl.float32, buffer=nl.psum)
        q[...] = nisa.nc_matmul(x, y, mask=(i_p < 32))
        nl.store(out[2], value=nl.copy(q))
        return out, st, m8
    a, b = rand(64, 64, lo=0, hi=1), rand(64, 64, lo=0, hi=1)
    o, st, m8 = run(k, a, b)
    ref, r = np.zeros_like(a), np.zeros(64, np.float32)
    for i in range(64):
        r = a[:, i] * r + b[:, i]
        ref[:, i] = r
    np.testing.assert_allclose(o[0], ref, rtol=1e-6)
    np.testing.assert_allclose(st[:, 0], a.mean(1), atol=1e-6)
    np.testing.assert_allclose(st[:, 1], a.var(1), atol=1e-6)
    np.testing.assert_array_equal(m8, -np.sort(-a, axis=1)[:, :8])
    assert 0.0 <= o[1].min() and o[1].max() < 1.0 and o[1].std() > 0.2      # uniform [0, 1): std ~0.29
    np.testing.assert_allclose(o[2][:32], (a.T @ b)[:32], rtol=1e-5)
    np.testing.assert_array_equal(o[2][32:], 0.0)


def test_masked_instruction_reads_only_masked_elements():
    """Rows outside mask= are neither written nor read: no uninitialised-read report for them, but
    one for a never-written element inside the mask."""
    import warnings
    from trnlab.errors import UninitializedReadWarning

    def kernel(rows_written):
        @nki.jit
        def k(a):
            out = nl.ndarray((128, 32), dtype=nl.float32, buffer=nl.shared_hbm)
            i_p, i_f = nl.arange(128)[:, None], nl.arange(32)[None, :]
            x = nl.ndarray((128, 32), dtype=nl.float32, buffer=nl.sbuf)
            x[i_p, i_f] = nl.load(a, mask=(i_p >= 128 - rows_written))
            y = nisa.tensor_tensor_scan(x, x, 0.0, np.multiply, np.add, mask=(i_p >= 64))
            nl.store(out[i_p, i_f], value=y, mask=(i_p >= 64))
            return out
        return k

    @nki.jit
    def scan_prefix(a):
        out = nl.ndarray((128, 32), dtype=nl.float32, buffer=nl.shared_hbm)
        i_p, i_f = nl.arange(128)[:, None], nl.arange(32)[None, :]
        ones = nl.full((128, 32), 1.0, dtype=nl.float32)
        x = nl.ndarray((128, 32), dtype=nl.float32, buffer=nl.sbuf)
        x[i_p, i_f] = nl.load(a[i_p, i_f], mask=(i_f < 20))
        y = nisa.tensor_tensor_scan(ones, x, 0.0, np.multiply, np.add, mask=(i_f < 20))
        nl.store(out[i_p, i_f], value=y, mask=(i_f < 20))
        return out

    a = rand(128, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UninitializedReadWarning)
        out = run(kernel(64), a)
        tail = run(scan_prefix, a)         # a mask cutting the scanned axis's tail: a partial tile
    np.testing.assert_allclose(tail[:, :20], np.cumsum(a[:, :20], axis=1), rtol=1e-5, atol=1e-5)
    want = np.zeros_like(a[64:])
    acc = np.zeros(64, np.float32)
    for i in range(32):
        acc = a[64:, i] * acc + a[64:, i]
        want[:, i] = acc
    np.testing.assert_allclose(out[64:], want, rtol=1e-5)     # fp32 recurrence
    with pytest.warns(UninitializedReadWarning, match="never written"):
        run(kernel(32), a)


@pytest.mark.parametrize("call", ["nc_transpose", "tensor_partition_reduce", "scan_free_axis"])
def test_partial_masks_the_simulator_does_not_model_are_refused_by_name(call):
    """mask= on these calls is never silently dropped: a partial mask raises NotImplementedError naming
    the call, a mask selecting everything is accepted."""
    def kernel(full):
        @nki.jit
        def k(a):
            out = nl.ndarray((64, 64), dtype=nl.float32, buffer=nl.shared_hbm)
            i_p, i_f = nl.arange(64)[:, None], nl.arange(64)[None, :]
            x = nl.load(a)
            m = (i_p < 64) if full else (i_f < 32)
            if call == "nc_transpose":
                y = nl.copy(nisa.nc_transpose(x, mask=m))
            elif call == "tensor_partition_reduce":
                y = nisa.tensor_partition_reduce(np.add, x, mask=(i_f < 64) if full else (i_f < 32))
                y = nl.broadcast_to(y, (64, 64))
            else:
                y = nisa.tensor_tensor_scan(x, x, 0.0, np.multiply, np.add, mask=(i_f < 64) if full else (i_f >= 32))
            nl.store(out, value=y)
            return out
        return k
    a = rand(64, 64)
    run(kernel(True), a)
    with pytest.raises(NotImplementedError, match=call.replace("scan_free_axis", "tensor_tensor_scan")):
        run(kernel(False), a)
