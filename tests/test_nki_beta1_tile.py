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


def test_a_tile_returning_call_is_allocated_at_its_own_line():
    """A Beta 1 call's result is issued lazily (on first use, or at the next call): its tile's allocation site,
    named in spill warnings and capacity errors and used for loop rotation, is still the call's line."""
    import inspect
    import warnings

    import trnlab.nki_beta1 as nki1
    import trnlab.nki_beta1.language as nl1
    from trnlab.core.compiler import CompilerModel, using
    from trnlab.errors import SbufSpillWarning

    f = 12288                                     # fp32: 48 KiB per partition, trn1's SBUF holds four

    def kernel(x):
        out = nl1.ndarray((128, f), dtype=x.dtype, buffer=nl1.shared_hbm)
        t0 = nl1.load(x[0])                       # LOAD0
        t1 = nl1.load(x[1])
        t2 = nl1.load(x[2])
        t3 = nl1.load(x[3])
        s = nl1.add(t1, t2)
        s = nl1.add(s, t3)
        s = nl1.add(s, t0)                        # t0 (least recently used) is spilled and reloaded
        nl1.store(out, s)
        return out

    line = next(i for i, text in enumerate(inspect.getsourcelines(kernel)[0], inspect.getsourcelines(kernel)[1])
                if "# LOAD0" in text)
    x = np.random.default_rng(0).random((4, 128, f), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught, using(CompilerModel(operand_reuse=False)):
        warnings.simplefilter("always")
        out = nki1.simulate_kernel(nki1.jit(kernel), x)
    np.testing.assert_array_equal(out, x[1] + x[2] + x[3] + x[0])
    spills = [str(w.message) for w in caught if issubclass(w.category, SbufSpillWarning)]
    assert len(spills) == 1 and f"test_nki_beta1_tile.py:{line}" in spills[0], spills
