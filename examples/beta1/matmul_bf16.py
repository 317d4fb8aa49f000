"""Tiled matmul C = A.T @ B with bf16 inputs (NKI Beta 1 style): K tiles of [128, M] and [128, N]
held in nl.par_dim block tensors, accumulated in a PSUM tile with `+=`, then benchmarked."""
import numpy as np
from neuronxcc import nki
import neuronxcc.nki.isa as nisa
import neuronxcc.nki.language as nl


@nki.jit
def nki_matmul_tiled(lhsT, rhs):
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_, "lhsT and rhs must have the same contraction dimension"
    TILE_K = nl.tile_size.pmax                     # 128
    TILE_M = nl.tile_size.gemm_stationary_fmax     # 128
    TILE_N = nl.tile_size.gemm_moving_fmax         # 512

    result = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.shared_hbm)
    i_k = nl.arange(TILE_K)[:, None]

    for m in nl.affine_range(M // TILE_M):
        lhsT_tiles = nl.ndarray((K // TILE_K, nl.par_dim(TILE_K), TILE_M), dtype=lhsT.dtype, buffer=nl.sbuf)
        for k in nl.affine_range(K // TILE_K):
            lhsT_tiles[k] = nl.load(lhsT[k * TILE_K + i_k, m * TILE_M + nl.arange(TILE_M)[None, :]])

        for n in nl.affine_range(N // TILE_N):
            res_psum = nl.zeros((TILE_M, TILE_N), nl.float32, buffer=nl.psum)
            for k in nl.affine_range(K // TILE_K):
                rhs_tile = nl.load(rhs[k * TILE_K + i_k, n * TILE_N + nl.arange(TILE_N)[None, :]])
                res_psum += nisa.nc_matmul(lhsT_tiles[k], rhs_tile)

            res_sb = nl.copy(res_psum, dtype=result.dtype)
            i_m = m * TILE_M + nl.arange(TILE_M)[:, None]
            i_n = n * TILE_N + nl.arange(TILE_N)[None, :]
            nl.store(result[i_m, i_n], value=res_sb)
    return result


if __name__ == "__main__":
    np.random.seed(0)
    lhs_small = np.random.random_sample((256, 512)).astype(np.float32)
    rhs_small = np.random.random_sample((256, 1024)).astype(np.float32)
    lhsT = nl.static_cast(lhs_small, nl.bfloat16)
    rhs = nl.static_cast(rhs_small, nl.bfloat16)

    output = nki.simulate_kernel(nki_matmul_tiled, lhsT, rhs)
    golden = lhsT.astype(np.float32).T @ rhs.astype(np.float32)
    assert np.allclose(output, golden, atol=1e-2, rtol=1e-3)
    print("matmul_bf16: output matches numpy")

    bench = nki.benchmark(warmup=5, iters=10)(nki_matmul_tiled)
    bench(lhsT, rhs)
    p99 = bench.benchmark_result.nc_latency.get_latency_percentile(99)
    print(f"matmul_bf16: latency p99 = {p99:.2f} us")
    assert p99 > 0
