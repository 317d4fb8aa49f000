"""nl.invert(x) called as a tile function (AWS: nki.language.invert(x, dtype=None), bitwise NOT of an
integer tile, implemented as XOR with all-ones); nl.invert also stays usable as an op0= operator."""
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import DtypeError
from test_nki_harness import run_tiles


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.uint8, np.uint32])
def test_invert_as_function_is_bitwise_not(dtype):
    info = np.iinfo(dtype)
    a = np.random.default_rng(3).integers(info.min, info.max, size=(64, 32), endpoint=True).astype(dtype)
    a[0, :4] = [0, info.max, info.min, 1]
    out, m = run_tiles(nl.invert, a)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.invert(a))
    assert sum(m.stats.instructions.values()) == 3          # load, one ALU instruction, store


def test_invert_dtype_argument_casts_the_result():
    a = np.arange(-8, 8, dtype=np.int32).reshape(4, 4)
    out, _ = run_tiles(lambda x: nl.invert(x, dtype=nl.float32), a)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.invert(a).astype(np.float32))
    out, _ = run_tiles(lambda x: nl.invert(x=x), a)              # keyword form of AWS's signature
    np.testing.assert_array_equal(out, np.invert(a))


def test_invert_refuses_float_tiles_with_location():
    @nki.jit
    def kernel(x):
        t = nl.load(x)
        r = nl.invert(t)
        out = nl.ndarray(t.shape, dtype=r.dtype, buffer=nl.shared_hbm)
        nl.store(out, r)
        return out

    with pytest.raises(DtypeError, match=r"nl\.invert.*integer.*float32.*test_nki_language_invert\.py:\d+"):
        nki.simulate(kernel)(np.ones((4, 4), dtype=np.float32))


def test_invert_still_works_as_op0_operator():
    a = np.arange(16, dtype=np.int32).reshape(4, 4)

    @nki.jit
    def kernel(x):
        t = nl.load(x)
        r = nl.ndarray(t.shape, dtype=t.dtype, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=r, data=t, op0=nl.invert, operand0=0)
        out = nl.ndarray(t.shape, dtype=t.dtype, buffer=nl.shared_hbm)
        nl.store(out, r)
        return out

    np.testing.assert_array_equal(nki.simulate(kernel)(a), np.invert(a))
