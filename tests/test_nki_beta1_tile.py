"""Tests of trnlab.nki_beta1.tile."""
import numpy as np

import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.language as nl


rng = np.random.default_rng(11)


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
