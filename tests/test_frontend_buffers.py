"""Tests of trnlab.frontend.buffers."""
import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl


rng = np.random.default_rng(11)


@nki.jit
def _double_if_hbm(x):
    p, f = x.shape
    t = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=x)
    r = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.sbuf)
    # branch on buffer kinds the way library helpers do: input in HBM, scratch in SBUF -> double
    if x.buffer in (nl.hbm, nl.shared_hbm, nl.private_hbm) and t.buffer == nl.sbuf and t.buffer != nl.psum:
        nisa.tensor_scalar(dst=r, data=t, op0=nl.multiply, operand0=2.0)
    else:
        nisa.tensor_copy(dst=r, src=t)
    out = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=r)
    return out


def test_buffer_markers_equal_the_tensor_buffer():
    assert nl.sbuf != nl.psum and nl.hbm != nl.sbuf      # markers stay distinct from each other
    assert nl.shared_hbm == "hbm" and nl.sbuf == "sbuf" and nl.sbuf != "psum"
    assert len({nl.sbuf, nl.psum, nl.hbm}) == 3           # still hashable


def test_kernel_branching_on_buffer_kind():
    x = rng.standard_normal((32, 16)).astype(np.float32)
    out = np.asarray(nki.simulate(_double_if_hbm)(x))
    np.testing.assert_array_equal(out, 2 * x)             # x * 2 is exact in fp32
