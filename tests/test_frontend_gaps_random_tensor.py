"""Current front end: nl.rand / nl.random_seed / nl.dropout (deterministic, via the ISA's Rand, SetRngSeed
and Dropout instructions) and the `nki.tensor` module with nl.shared_constant."""
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.language as nl
import trnlab.nki.ntensor as ntensor
from trnlab.compat import target_of


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


def test_ntensor_constants_match_numpy():
    np.testing.assert_array_equal(ntensor.identity(5, dtype=nl.int8), np.eye(5, dtype=np.int8))
    np.testing.assert_array_equal(ntensor.arange(0, 32, 1, dtype=nl.int32), np.arange(32))
    ones = ntensor.zeros((4, 4), dtype=nl.int8) + 1
    assert isinstance(ones, ntensor.TraceTimeTensor) and ones.dtype == np.int8 and np.all(ones == 1)
    with pytest.raises(NotImplementedError, match="nki.tensor.linspace"):
        ntensor.linspace(0, 1, 5)


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


def test_compat_maps_nki_tensor():
    assert target_of("nki.tensor") == "trnlab.nki.ntensor"
    from trnlab.compat import install, installed, uninstall
    before = installed()
    install(force=True)
    try:
        import nki.tensor as nt
        assert nt is ntensor
        from trnlab.nki.tensor import NkiTensor        # the NkiTensor module stays importable
        assert NkiTensor.__name__ == "NkiTensor"
    finally:
        uninstall()
        if before:
            install()
