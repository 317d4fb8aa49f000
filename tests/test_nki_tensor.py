"""Tests of trnlab.nki.tensor."""
import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl


rng = np.random.default_rng(11)


@nki.jit
def _window_from_column(x, col):
    # rows [0, P) of x[T, C] viewed as [P, 2 tiles, 3 columns], shifted right by a runtime column index
    T, C = x.shape
    P = T // 2
    c_sb = nl.ndarray((1, 1), dtype=nl.int32, buffer=nl.sbuf)
    nisa.dma_copy(dst=c_sb, src=col)
    w = nl.ndarray((P, 2, 3), dtype=x.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=w, src=x.ap(pattern=[[C, P], [C * P, 2], [1, 3]], offset=0, scalar_offset=c_sb,
                                  indirect_dim=1))
    out = nl.ndarray((P, 2, 3), dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=w)
    return out


def test_scalar_offset_moves_by_the_tensor_dimension_stride():
    x = rng.standard_normal((16, 10)).astype(np.float32)
    out = np.asarray(nki.simulate(_window_from_column)(x, np.array([[4]], np.int32)))
    ref = np.stack([x[:8, 4:7], x[8:, 4:7]], axis=1)      # column offset 4 (tensor dim 1 stride 1)
    np.testing.assert_array_equal(out, ref)               # a copy: exact


def test_scalar_offset_on_a_leading_dimension():
    @nki.jit
    def pick_row_block(x, r):
        r_sb = nl.ndarray((1, 1), dtype=nl.int32, buffer=nl.sbuf)
        nisa.dma_copy(dst=r_sb, src=r)
        t = nl.ndarray((4, 6), dtype=x.dtype, buffer=nl.sbuf)
        # x[E, 4, 6]: indirect_dim=0 selects expert r (stride 24), whatever the pattern looks like
        nisa.dma_copy(dst=t, src=x.ap(pattern=[[6, 4], [1, 6]], offset=0, scalar_offset=r_sb, indirect_dim=0))
        out = nl.ndarray((4, 6), dtype=x.dtype, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=t)
        return out

    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    out = np.asarray(nki.simulate(pick_row_block)(x, np.array([[2]], np.int32)))
    np.testing.assert_array_equal(out, x[2])
