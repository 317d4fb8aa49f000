"""Element-wise addition, tiled over rows: the "getting started" kernel of AWS's current NKI.

Run it with trnlab standing in for `nki`:
    trnlab run examples/nki_current/tensor_add.py
"""
import numpy as np

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def nki_tensor_add_kernel(a_input, b_input):
    assert a_input.shape == b_input.shape
    rows, cols = a_input.shape
    P = nl.tile_size.pmax
    assert rows % P == 0

    c_output = nl.ndarray(a_input.shape, dtype=a_input.dtype, buffer=nl.shared_hbm)
    for i in nl.affine_range(rows // P):
        a_tile = nl.ndarray((P, cols), dtype=a_input.dtype, buffer=nl.sbuf)
        b_tile = nl.ndarray((P, cols), dtype=b_input.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=a_tile, src=a_input[i * P:(i + 1) * P, :])
        nisa.dma_copy(dst=b_tile, src=b_input[nl.ds(i * P, P), :])

        c_tile = nl.ndarray((P, cols), dtype=a_input.dtype, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=c_tile, data1=a_tile, data2=b_tile, op=nl.add)
        nisa.dma_copy(dst=c_output[i * P:(i + 1) * P, :], src=c_tile)
    return c_output


@nki.jit
def nl_tensor_add_kernel(a_input, b_input):
    """The same with the nki.language convenience functions (NKI 0.3+)."""
    c_output = nl.ndarray(a_input.shape, dtype=a_input.dtype, buffer=nl.shared_hbm)
    P = nl.tile_size.pmax
    for i in nl.affine_range(a_input.shape[0] // P):
        a = nl.load(a_input[i * P:(i + 1) * P, :])
        b = nl.load(b_input[i * P:(i + 1) * P, :])
        nl.store(c_output[i * P:(i + 1) * P, :], nl.add(a, b))
    return c_output


if __name__ == "__main__":
    np.random.seed(0)
    a = np.random.rand(256, 512).astype(np.float32)
    b = np.random.rand(256, 512).astype(np.float32)
    expected = a + b

    c = nki.simulate(nki_tensor_add_kernel)(a, b)
    assert np.allclose(c, expected, rtol=0, atol=1e-6), np.abs(c - expected).max()
    c2 = nki.simulate(nl_tensor_add_kernel)(a, b)
    assert np.allclose(c2, expected, rtol=0, atol=1e-6), np.abs(c2 - expected).max()
    print("tensor_add: PASS")
