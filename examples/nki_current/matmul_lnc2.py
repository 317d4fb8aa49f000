"""Tiled bf16 matmul C[M, N] = A[M, K] @ B[K, N] with the K loop accumulating in PSUM, launched on a
logical NeuronCore pair (LNC2): program 0 and program 1 each compute half of the M tiles.

    trnlab run examples/nki_current/matmul_lnc2.py --target trn2
"""
import ml_dtypes
import numpy as np

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def matmul_kernel(a_t, b):
    """a_t is A transposed ([K, M]): the Tensor engine contracts over the partition dim."""
    K, M = a_t.shape
    _, N = b.shape
    TK, TM, TN = nl.tile_size.pmax, nl.tile_size.gemm_stationary_fmax, nl.tile_size.gemm_moving_fmax
    c = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.shared_hbm)

    n_programs = nl.num_programs(0)
    m_tiles = M // TM
    for m in nl.affine_range(nl.program_id(0), m_tiles, n_programs):
        for n in nl.affine_range(N // TN):
            acc = nl.ndarray((TM, TN), dtype=nl.float32, buffer=nl.psum)
            for k in nl.sequential_range(K // TK):
                lhs = nl.ndarray((TK, TM), dtype=a_t.dtype, buffer=nl.sbuf)
                rhs = nl.ndarray((TK, TN), dtype=b.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=lhs, src=a_t[nl.ds(k * TK, TK), nl.ds(m * TM, TM)])
                nisa.dma_copy(dst=rhs, src=b[nl.ds(k * TK, TK), nl.ds(n * TN, TN)])
                nisa.nc_matmul(dst=acc, stationary=lhs, moving=rhs)
            res = nl.ndarray((TM, TN), dtype=nl.float32, buffer=nl.sbuf)
            nisa.tensor_copy(dst=res, src=acc)
            nisa.dma_copy(dst=c[nl.ds(m * TM, TM), nl.ds(n * TN, TN)], src=res)
    return c


if __name__ == "__main__":
    np.random.seed(0)
    M, K, N = 512, 256, 1024
    a = np.random.randn(M, K).astype(ml_dtypes.bfloat16)
    b = np.random.randn(K, N).astype(ml_dtypes.bfloat16)
    expected = a.astype(np.float32) @ b.astype(np.float32)

    c = nki.simulate(matmul_kernel[2])(np.ascontiguousarray(a.T), b)
    # bf16 products are exact in fp32; only the fp32 accumulation order differs
    assert np.allclose(c, expected, rtol=1e-5, atol=1e-4), np.abs(c - expected).max()
    print("matmul_lnc2: PASS")
