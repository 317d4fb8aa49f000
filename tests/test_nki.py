"""Tests of trnlab.nki."""
import numpy as np
import pytest

import trnlab.nki as cnki
import trnlab.nki as nki
import trnlab.nki.isa as cisa
import trnlab.nki.isa as nisa
import trnlab.nki.language as cnl
import trnlab.nki.language as nl
from trnlab.errors import TrnlabWarning


rng = np.random.default_rng(7)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_nki_dtype_is_the_type_of_the_language_dtypes():
    @nki.jit
    def cast_copy(x, out_dtype: nki.dtype = nl.int32):
        t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        r = nl.ndarray(x.shape, dtype=out_dtype, buffer=nl.sbuf)
        nisa.tensor_copy(dst=r, src=t)
        out = nl.ndarray(x.shape, dtype=out_dtype, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=r)
        return out

    assert isinstance(nl.float32, nki.dtype) and isinstance(nl.int32, nki.dtype)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = np.asarray(nki.simulate(cast_copy)(x))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, x.astype(np.int32))   # small integers: exact


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

    a = randn(16, 16)
    np.testing.assert_array_equal(copy_kernel(a), a)
    assert copy_kernel.last_run.machine.chip.name == "trn1"
