"""nl.* convenience tile functions of the current front end, each against numpy/scipy."""
import textwrap

import ml_dtypes
import numpy as np
import pytest
from scipy import special

import trnlab.nki as cnki
import trnlab.nki as nki
import trnlab.nki.language as cnl
import trnlab.nki.language as nl
import trnlab.nki.ntensor as ntensor
from trnlab.compat import run_script
from trnlab.errors import BufferKindError, NkiValidationError, ShapeError
from test_nki_harness import rand, run_tiles

RTOL = 1e-5   # fp32 math on both sides; only transcendental implementations differ

BINARY = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
    "maximum": np.maximum, "minimum": np.minimum,
    "equal": lambda a, b: (a == b).astype(np.float32), "not_equal": lambda a, b: (a != b).astype(np.float32),
    "greater": lambda a, b: (a > b).astype(np.float32), "greater_equal": lambda a, b: (a >= b).astype(np.float32),
    "less": lambda a, b: (a < b).astype(np.float32), "less_equal": lambda a, b: (a <= b).astype(np.float32),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_same_shape(name):
    a, b = rand(128, 64, seed=1), rand(128, 64, seed=2)
    b[:, :8] = a[:, :8]                      # some ties for the comparisons
    out, m = run_tiles(lambda x, y: getattr(nl, name)(x, y), a, b)
    np.testing.assert_allclose(out, BINARY[name](a, b), rtol=RTOL)
    assert m.stats.instructions["tensor_tensor"] == 1


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "maximum", "greater"])
def test_binary_broadcasts(name):
    a, col, row = rand(128, 32, seed=3), rand(128, 1, seed=4), rand(1, 32, seed=5)
    ref = BINARY[name]
    out, m = run_tiles(lambda x, c: getattr(nl, name)(x, c), a, col)        # free-dim broadcast
    np.testing.assert_allclose(out, ref(a, col), rtol=RTOL)
    assert m.stats.instructions["tensor_scalar"] == 1
    out, _ = run_tiles(lambda c, x: getattr(nl, name)(c, x), col, a)          # reversed operand order
    np.testing.assert_allclose(out, ref(col, a), rtol=RTOL)
    out, _ = run_tiles(lambda x, r: getattr(nl, name)(x, r), a, row)        # partition broadcast
    np.testing.assert_allclose(out, ref(a, row), rtol=RTOL)


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "divide", "maximum", "less"])
def test_binary_with_scalar(name):
    a = rand(64, 48, seed=6)
    out, _ = run_tiles(lambda x: getattr(nl, name)(x, 0.75), a)
    np.testing.assert_allclose(out, BINARY[name](a, np.float32(0.75)), rtol=RTOL)
    out, _ = run_tiles(lambda x: getattr(nl, name)(0.75, x), a)
    np.testing.assert_allclose(out, BINARY[name](np.float32(0.75), a), rtol=RTOL)


def test_power_runs_on_gpsimd():
    a, b = rand(32, 16, lo=0.5, hi=2.0, seed=7), rand(32, 16, seed=8)
    out, m = run_tiles(nl.power, a, b)
    np.testing.assert_allclose(out, np.power(a, b), rtol=RTOL)
    assert any(e.value == "gpsimd" for e in m.stats.by_engine)


def test_dtype_default_and_rounding():
    a, b = rand(128, 64, seed=9, dtype=ml_dtypes.bfloat16), rand(128, 64, seed=10, dtype=ml_dtypes.bfloat16)
    out, _ = run_tiles(nl.add, a, b)
    assert out.dtype == ml_dtypes.bfloat16                      # result keeps the input dtype
    exact = a.astype(np.float32) + b.astype(np.float32)
    np.testing.assert_array_equal(out, exact.astype(ml_dtypes.bfloat16))   # fp32 math, one rounding
    out, _ = run_tiles(lambda x, y: nl.add(x, y, dtype=nl.float32), a, b)
    np.testing.assert_array_equal(out, exact)
    mixed, _ = run_tiles(nl.multiply, a, rand(128, 64, seed=11))   # bf16 with fp32 promotes to fp32
    assert mixed.dtype == np.float32
    cmp, _ = run_tiles(lambda x, y: nl.greater(x, y, dtype=nl.uint8), a, b)
    assert cmp.dtype == np.uint8 and np.array_equal(cmp, (a > b).astype(np.uint8))


UNARY = {
    "exp": np.exp, "tanh": np.tanh, "sigmoid": special.expit, "relu": lambda x: np.maximum(x, 0),
    "gelu": lambda x: 0.5 * x * (1 + special.erf(x / np.sqrt(2))), "silu": lambda x: x * special.expit(x),
    "square": np.square, "abs": np.abs, "sign": np.sign, "sin": np.sin, "cos": np.cos, "arctan": np.arctan,
    "negative": np.negative, "tan": np.tan, "softplus": lambda x: np.log1p(np.exp(x)), "erf": special.erf,
    "gelu_apprx_tanh": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))), "floor": np.floor, "ceil": np.ceil,
}
POSITIVE = {"log": np.log, "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x), "reciprocal": lambda x: 1 / x}


@pytest.mark.parametrize("name", sorted(UNARY) + sorted(POSITIVE))
def test_unary(name):
    ref = UNARY.get(name) or POSITIVE[name]
    a = rand(128, 40, lo=0.1, hi=3.0, seed=12) if name in POSITIVE else rand(128, 40, lo=-1.4, hi=1.4, seed=12)
    out, m = run_tiles(getattr(nl, name), a)
    np.testing.assert_allclose(out, ref(a.astype(np.float64)).astype(np.float32), rtol=RTOL, atol=1e-6)
    assert sum(m.stats.instructions.values()) >= 3            # load, >=1 compute instruction, store


@pytest.mark.parametrize("name,ref", [("sum", np.sum), ("max", np.max), ("min", np.min), ("mean", np.mean),
                                      ("prod", np.prod)])
@pytest.mark.parametrize("keepdims", [True, False])
def test_reductions_2d(name, ref, keepdims):
    a = rand(128, 24, lo=0.5, hi=1.5, seed=13)
    out, _ = run_tiles(lambda x: getattr(nl, name)(x, axis=1, keepdims=keepdims), a)
    assert out.shape == (128, 1)                  # on-chip results stay 2-D
    np.testing.assert_allclose(out, ref(a, axis=1, keepdims=True), rtol=1e-5)


def test_reductions_3d_axes():
    a = rand(64, 4, 16, seed=14)
    out, _ = run_tiles(lambda x: nl.sum(x, axis=2), a)
    assert out.shape == (64, 4)
    np.testing.assert_allclose(out, a.sum(axis=2), rtol=1e-5, atol=1e-6)
    out, _ = run_tiles(lambda x: nl.max(x, axis=(1, 2), keepdims=True), a)
    assert out.shape == (64, 1, 1)
    np.testing.assert_allclose(out, a.max(axis=(1, 2), keepdims=True))
    out, _ = run_tiles(lambda x: nl.mean(x, axis=[-1]), a)
    np.testing.assert_allclose(out, a.mean(axis=2), rtol=1e-5, atol=1e-6)


def test_reduce_partition_axis_is_an_error():
    with pytest.raises(ShapeError, match="partition"):
        run_tiles(lambda x: nl.sum(x, axis=0), rand(8, 8))


def test_all_any():
    a = (rand(32, 16, seed=15) > 0).astype(np.float32)
    a[0] = 1.0
    out, _ = run_tiles(lambda x: nl.all(x, axis=1), a)
    np.testing.assert_array_equal(out[:, 0], a.all(axis=1).astype(np.float32))
    out, _ = run_tiles(lambda x: nl.any(x, axis=1), a)
    np.testing.assert_array_equal(out[:, 0], a.any(axis=1).astype(np.float32))


def test_softmax():
    a = rand(128, 96, lo=-6, hi=6, seed=16)
    out, _ = run_tiles(lambda x: nl.softmax(x, axis=1), a)
    e = np.exp(a - a.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    a3 = rand(32, 3, 20, seed=17)
    out, _ = run_tiles(lambda x: nl.softmax(x, axis=2), a3)         # per (partition, row) groups
    e = np.exp(a3 - a3.max(axis=2, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=2, keepdims=True), rtol=1e-5, atol=1e-7)


def test_rms_norm():
    a, w = rand(128, 64, seed=18), rand(1, 64, lo=0.5, hi=1.5, seed=19)
    out, _ = run_tiles(lambda x, g: nl.rms_norm(x, g, axis=1, n=64, epsilon=1e-5), a, w)
    ref = a / np.sqrt(np.mean(a * a, axis=1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transpose_x", [False, True])
def test_matmul(transpose_x):
    x = rand(64, 96, seed=20) if not transpose_x else rand(96, 64, seed=20)   # [M, K] or [K, M]
    y = rand(96, 200, seed=21)
    out, m = run_tiles(lambda a, b: nl.matmul(a, b, transpose_x=transpose_x), x, y)
    ref = (x.T if transpose_x else x).astype(np.float64) @ y
    assert out.shape == (64, 200) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    assert m.stats.instructions["nc_matmul"] == 1
    assert m.stats.instructions["nc_transpose"] == (0 if transpose_x else 1)


def test_transpose_returns_psum_tile():
    a = rand(64, 100, seed=22)
    out, _ = run_tiles(nl.transpose, a)
    np.testing.assert_array_equal(out, a.T)
    with pytest.raises(ShapeError, match="dimensions of 2"):
        run_tiles(nl.transpose, rand(8, 2, 4))


def test_where_and_broadcast_to():
    a, b = rand(64, 32, seed=23), rand(64, 32, seed=24)
    out, _ = run_tiles(lambda x, y: nl.where(nl.greater(x, y), x, y), a, b)
    np.testing.assert_array_equal(out, np.maximum(a, b))
    out, _ = run_tiles(lambda x: nl.where(nl.less(x, 0.0), 0.0, x), a)
    np.testing.assert_array_equal(out, np.where(a < 0, 0, a))
    out, _ = run_tiles(lambda r: nl.broadcast_to(r, (128, 32)), b[:1])
    np.testing.assert_array_equal(out, np.broadcast_to(b[:1], (128, 32)))


def test_creation_functions_issue_memset():
    def fn(x):
        z = nl.zeros((128, 16), dtype=nl.float32)
        f = nl.full((128, 16), 2.5, dtype=nl.float32)
        o = nl.ones((128, 16), dtype=nl.bfloat16)
        return nl.add(nl.add(z, f), nl.add(o, x))
    a = rand(128, 16, seed=25)
    out, m = run_tiles(fn, a)
    np.testing.assert_allclose(out, a + 3.5, rtol=RTOL)
    assert m.stats.instructions["memset"] == 3


def test_identity_copy_and_like():
    out, _ = run_tiles(lambda x: nl.add(nl.shared_identity_matrix(64, dtype=nl.float32), x), np.zeros((64, 64),
                                                                                                     np.float32))
    np.testing.assert_array_equal(out, np.eye(64, dtype=np.float32))
    a = rand(32, 8, seed=26)
    out, _ = run_tiles(lambda x: nl.copy(x, dtype=nl.bfloat16), a)
    assert out.dtype == ml_dtypes.bfloat16 and np.array_equal(out, a.astype(ml_dtypes.bfloat16))
    out, _ = run_tiles(lambda x: nl.add(nl.zeros_like(x), x), a)
    np.testing.assert_array_equal(out, a)


def test_load_transpose2d_and_store_from_psum():
    a = rand(64, 32, seed=27)

    @nki.jit
    def k(src):
        t = nl.load_transpose2d(src)
        ps = nl.transpose(t)                  # back to [64, 32] in PSUM
        out = nl.ndarray(src.shape, dtype=src.dtype, buffer=nl.shared_hbm)
        nl.store(out, ps)                     # staged through SBUF
        return out
    np.testing.assert_array_equal(nki.simulate(k)(a), a)


def test_device_print_records_values(capsys):
    a = rand(4, 3, seed=28)

    @nki.jit
    def k(src):
        nl.device_print("tile:", nl.load(src))
        return src
    nki.simulate(k)(a)
    printed = k.last_run.machine.printed
    assert len(printed) == 1 and printed[0].startswith("tile:")
    assert f"{a[0, 0]:.4f}"[:5] in printed[0] and "tile:" in capsys.readouterr().out


def test_tile_size_follows_target():
    sizes = {}
    for target in ("trn1", "trn2", "trn3"):
        @nki.jit
        def k(x):
            sizes[target] = (nl.tile_size.pmax, nl.tile_size.total_available_sbuf_size, nl.tile_size.psum_fmax)
            return x
        nki.simulate(k, target=target)(np.zeros((1, 1), np.float32))
    assert sizes["trn1"] == (128, 192 * 1024, 512)
    assert sizes["trn2"] == (128, 224 * 1024, 512)
    assert sizes["trn3"][1] == 256 * 1024


def test_misuse_errors():
    with pytest.raises(NkiValidationError, match="at least one"):
        run_tiles(lambda x: nl.add(1.0, 2.0), rand(4, 4))

    @nki.jit
    def hbm_operand(a):
        return nl.exp(a)
    with pytest.raises(BufferKindError, match="psum\\|sbuf"):
        nki.simulate(hbm_operand)(rand(4, 4))

    @nki.jit
    def load_from_sbuf(a):
        return nl.load(nl.load(a))
    with pytest.raises(BufferKindError, match="'hbm'"):
        nki.simulate(load_from_sbuf)(rand(4, 4))


def test_not_modelled_apis_raise():
    with pytest.raises(NotImplementedError, match="fori_loop"):
        nl.fori_loop(0, 4, lambda i: None)


RUNTIME_DS = textwrap.dedent("""
    import numpy as np
    import nki
    import nki.isa as nisa
    import nki.language as nl

    @nki.jit
    def k(a, idx):
        out = nl.ndarray((128, 16), dtype=a.dtype, buffer=nl.shared_hbm)
        i = nl.ndarray((1, 1), dtype=nl.uint32, buffer=nl.sbuf)
        nisa.dma_copy(dst=i, src=idx)
        t = nl.ndarray((128, 16), dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=a[:, nl.ds(i, 16)])
        nisa.dma_copy(dst=out, src=t)
        return out

    k(np.zeros((128, 64), np.float32), np.array([[8]], np.uint32))
""")


def _rand_kernel(seed_a, seed_b):
    @nki.jit
    def k():
        out = nl.ndarray((3, 128, 64), dtype=nl.float32, buffer=nl.shared_hbm)
        nl.random_seed(nl.full((1, 1), seed_a, dtype=nl.int32, buffer=nl.sbuf))
        nl.store(out[0], nl.rand((128, 64), dtype=nl.float32))
        nl.store(out[1], nl.rand((128, 64), dtype=nl.float32))     # the stream moves on
        nl.random_seed(seed_b)                                       # a Python int seed is accepted too
        nl.store(out[2], nl.rand((128, 64), dtype=nl.float32))
        return out
    return k


rng = np.random.default_rng(7)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_runtime_ds_start_is_named_not_a_typeerror(tmp_path, capsys):
    """nl.ds(start=<runtime tensor>, size) is documented NKI; trnlab does not model it and must say so
    (it used to die with a bare TypeError from int() inside trnlab)."""
    script = tmp_path / "rtds.py"
    script.write_text(RUNTIME_DS)
    assert run_script(str(script)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "NotImplementedError: nl.ds" in err and "runtime start" in err and f"{script}:13" in err


def test_ds_static_start_still_accepts_numpy_ints():
    import numpy as np
    import trnlab.nki.language as nl
    d = nl.ds(np.int64(3), 4)
    assert d.as_slice() == slice(3, 7, 1)


def test_rand_is_uniform_in_unit_interval():
    out = _rand_kernel(42, 7)()
    r = out[0]
    assert r.min() >= 0.0 and r.max() < 1.0
    # 8192 uniform samples: mean 0.5 +- 0.0032 (1 sigma), variance 1/12; tolerances ~6 sigma
    assert abs(r.mean() - 0.5) < 0.02
    assert abs(r.var() - 1 / 12) < 0.01
    assert np.all((r * 2 ** 24) == np.floor(r * 2 ** 24))           # multiples of 2^-24 (24 random bits)
    assert not np.array_equal(out[0], out[1])


def test_same_seed_same_numbers_across_runs_and_reseeds():
    a = _rand_kernel(42, 42)()
    b = _rand_kernel(42, 42)()
    np.testing.assert_array_equal(a, b)                               # deterministic across runs
    np.testing.assert_array_equal(a[0], a[2])                         # re-seeding restarts the stream
    c = _rand_kernel(43, 42)()
    assert not np.array_equal(a[0], c[0])                             # another seed, other numbers


def test_rand_bf16_and_psum_buffer():
    @nki.jit
    def k():
        out = nl.ndarray((128, 32), dtype=nl.bfloat16, buffer=nl.shared_hbm)
        r = nl.rand((128, 32), dtype=nl.bfloat16, buffer=nl.psum)
        nl.store(out, nl.copy(r))
        return out
    r = k().astype(np.float32)
    assert r.min() >= 0.0 and r.max() <= 1.0        # bf16 rounding may reach 1.0 exactly


def test_dropout_zeroes_about_rate_and_keeps_the_rest():
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, nl.dropout(nl.load(a), 0.3))
        return out
    a = np.random.default_rng(0).uniform(1.0, 2.0, size=(128, 256)).astype(np.float32)
    out = k(a)
    dropped = out == 0
    # 32768 Bernoulli(0.3) draws: sigma 0.0025; tolerance 8 sigma
    assert abs(dropped.mean() - 0.3) < 0.02
    np.testing.assert_array_equal(out[~dropped], a[~dropped])         # kept values unchanged (no rescale)
    np.testing.assert_array_equal(k(a), out)                           # deterministic


def test_dropout_with_dtype_and_extremes():
    @nki.jit
    def k(a):
        out = nl.ndarray((2,) + a.shape, dtype=nl.bfloat16, buffer=nl.shared_hbm)
        x = nl.load(a)
        nl.store(out[0], nl.dropout(x, 0.0, dtype=nl.bfloat16))
        nl.store(out[1], nl.dropout(x, 1.0, dtype=nl.bfloat16))
        return out
    a = np.random.default_rng(1).uniform(1.0, 2.0, size=(32, 16)).astype(np.float32)
    out = k(a).astype(np.float32)
    import ml_dtypes
    np.testing.assert_array_equal(out[0], a.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert np.all(out[1] == 0)


def test_shared_constant_of_ntensor_identity():
    @nki.jit
    def k():
        out = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.shared_hbm)
        ident = nl.shared_constant(ntensor.identity(128, dtype=nl.int8), dtype=nl.float16)
        seq = nl.shared_constant(ntensor.arange(0, 32, 1, dtype=nl.int32), dtype=nl.float32)
        assert ident.dtype == nl.float16 and seq.shape == (32,)
        nl.store(out, nl.load(ident, dtype=nl.float32))
        return out
    np.testing.assert_array_equal(k(), np.eye(128, dtype=np.float32))


def test_current_sum_over_a_middle_axis():
    @cnki.jit
    def middle_sum(x):
        t = cnl.load(x)                                    # [P, A, B]
        out = cnl.ndarray((x.shape[0], x.shape[2]), dtype=cnl.float32, buffer=cnl.shared_hbm)
        cnl.store(out, cnl.sum(t, axis=1))
        return out

    x = randn(8, 5, 6)
    np.testing.assert_allclose(cnki.simulate(middle_sum)(x), x.sum(axis=1), rtol=1e-5, atol=1e-5)
