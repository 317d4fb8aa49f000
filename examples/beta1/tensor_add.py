"""Element-wise add of two [256, 1024] tensors, SPMD over a 2x2 grid (NKI Beta 1 style).

Each program loads one [128, 512] tile of each input with nl.arange index expressions of
nl.program_id, adds them on the Vector Engine and stores the sum.
"""
import numpy as np
from neuronxcc import nki
import neuronxcc.nki.language as nl


@nki.jit
def nki_tensor_add_kernel(a_input, b_input):
    c_output = nl.ndarray(a_input.shape, dtype=a_input.dtype, buffer=nl.shared_hbm)

    # the tile this program works on
    offset_i_x = nl.program_id(0) * 128
    offset_i_y = nl.program_id(1) * 512

    ix = offset_i_x + nl.arange(128)[:, None]
    iy = offset_i_y + nl.arange(512)[None, :]

    a_tile = nl.load(a_input[ix, iy])
    b_tile = nl.load(b_input[ix, iy])
    c_tile = a_tile + b_tile
    nl.store(c_output[ix, iy], value=c_tile)
    return c_output


if __name__ == "__main__":
    a = np.random.random_sample([256, 1024]).astype(np.float32)
    b = np.random.random_sample([256, 1024]).astype(np.float32)

    grid_x = a.shape[0] // 128
    grid_y = a.shape[1] // 512
    c = nki.simulate_kernel(nki_tensor_add_kernel[grid_x, grid_y], a, b)

    assert np.allclose(c, a + b)
    print("tensor_add: output matches numpy")
