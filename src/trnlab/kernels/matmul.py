"""The four steps of the NKI matrix-multiplication tutorial, written in the current front end.

result[M, N] = lhsT[K, M].T @ rhs[K, N]; lhsT arrives transposed (contraction on partitions), bf16
inputs, fp32 accumulation in PSUM, result in out_dtype (default: the input dtype).

  step 1  matmul_tiled        every (m, n, k) iteration loads its own lhsT and rhs tiles
  step 2  matmul_hoist_load   a column of lhsT tiles per m, a column of rhs tiles per (m, n)
  step 3  matmul_block_free   2 x 2 blocks of M and N tiles share their loads
  step 4  matmul_blocked      blocks on M, N and K, wide DMAs, partial sums kept in SBUF

The tutorial measured them at [4096, 8192] @ [8192, 8192] bf16 on one trn1 NeuronCore
(51.80, 42.96, 22.07, 6.97 ms); `trnlab calibrate` compares the timing model with those numbers.
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import ShapeError

TILE_M = 128     # nl.tile_size.gemm_stationary_fmax
TILE_K = 128     # nl.tile_size.pmax
TILE_N = 512     # nl.tile_size.gemm_moving_fmax


def _shapes(lhsT, rhs, name, block_m=TILE_M, block_n=TILE_N, block_k=TILE_K):
    K, M = lhsT.shape
    K2, N = rhs.shape
    if K != K2:
        raise ShapeError(f"{name}: contraction dims differ: lhsT {list(lhsT.shape)}, rhs {list(rhs.shape)}")
    if M % block_m or N % block_n or K % block_k:
        raise ShapeError(f"{name}: needs M % {block_m} == 0, N % {block_n} == 0 and K % {block_k} == 0; "
                         f"got M={M}, N={N}, K={K}")
    return K, M, N


@nki.jit
def matmul_tiled(lhsT, rhs, out_dtype=None):
    """Step 1: tile M, N and K; load both operand tiles inside the innermost loop."""
    K, M, N = _shapes(lhsT, rhs, "matmul_tiled")
    result = nl.ndarray((M, N), dtype=out_dtype or lhsT.dtype, buffer=nl.shared_hbm)
    for m in nl.affine_range(M // TILE_M):
        for n in nl.affine_range(N // TILE_N):
            res_psum = nl.ndarray((TILE_M, TILE_N), dtype=nl.float32, buffer=nl.psum)
            for k in nl.affine_range(K // TILE_K):
                lhsT_tile = nl.ndarray((TILE_K, TILE_M), dtype=lhsT.dtype, buffer=nl.sbuf)
                rhs_tile = nl.ndarray((TILE_K, TILE_N), dtype=rhs.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=lhsT_tile, src=lhsT[k * TILE_K:(k + 1) * TILE_K, m * TILE_M:(m + 1) * TILE_M])
                nisa.dma_copy(dst=rhs_tile, src=rhs[k * TILE_K:(k + 1) * TILE_K, n * TILE_N:(n + 1) * TILE_N])
                nisa.nc_matmul(dst=res_psum, stationary=lhsT_tile, moving=rhs_tile, accumulate=k > 0)
            res_sb = nl.ndarray((TILE_M, TILE_N), dtype=result.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=res_sb, src=res_psum)
            nisa.dma_copy(dst=result[m * TILE_M:(m + 1) * TILE_M, n * TILE_N:(n + 1) * TILE_N], src=res_sb)
    return result


@nki.jit
def matmul_hoist_load(lhsT, rhs, out_dtype=None):
    """Step 2: load a whole K-column of lhsT tiles per m and of rhs tiles per (m, n), outside the k loop."""
    K, M, N = _shapes(lhsT, rhs, "matmul_hoist_load")
    KT = K // TILE_K
    result = nl.ndarray((M, N), dtype=out_dtype or lhsT.dtype, buffer=nl.shared_hbm)
    for m in nl.affine_range(M // TILE_M):
        lhsT_tiles = nl.ndarray((TILE_K, KT, TILE_M), dtype=lhsT.dtype, buffer=nl.sbuf)
        for k in nl.affine_range(KT):
            nisa.dma_copy(dst=lhsT_tiles[:, k, :],
                          src=lhsT[k * TILE_K:(k + 1) * TILE_K, m * TILE_M:(m + 1) * TILE_M])
        for n in nl.affine_range(N // TILE_N):
            rhs_tiles = nl.ndarray((TILE_K, KT, TILE_N), dtype=rhs.dtype, buffer=nl.sbuf)
            for k in nl.affine_range(KT):
                nisa.dma_copy(dst=rhs_tiles[:, k, :],
                              src=rhs[k * TILE_K:(k + 1) * TILE_K, n * TILE_N:(n + 1) * TILE_N])
            res_psum = nl.ndarray((TILE_M, TILE_N), dtype=nl.float32, buffer=nl.psum)
            for k in nl.affine_range(KT):
                nisa.nc_matmul(dst=res_psum, stationary=lhsT_tiles[:, k, :], moving=rhs_tiles[:, k, :],
                               accumulate=k > 0)
            res_sb = nl.ndarray((TILE_M, TILE_N), dtype=result.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=res_sb, src=res_psum)
            nisa.dma_copy(dst=result[m * TILE_M:(m + 1) * TILE_M, n * TILE_N:(n + 1) * TILE_N], src=res_sb)
    return result


@nki.jit
def matmul_block_free(lhsT, rhs, out_dtype=None, TILES_IN_BLOCK_M=2, TILES_IN_BLOCK_N=2):
    """Step 3: block the free dims; a block of lhsT columns is reused across a block of rhs columns."""
    BLOCK_M, BLOCK_N = TILE_M * TILES_IN_BLOCK_M, TILE_N * TILES_IN_BLOCK_N
    K, M, N = _shapes(lhsT, rhs, "matmul_block_free", BLOCK_M, BLOCK_N)
    KT = K // TILE_K
    result = nl.ndarray((M, N), dtype=out_dtype or lhsT.dtype, buffer=nl.shared_hbm)
    for m in nl.affine_range(M // BLOCK_M):
        lhsT_tiles = nl.ndarray((TILE_K, TILES_IN_BLOCK_M, KT, TILE_M), dtype=lhsT.dtype, buffer=nl.sbuf)
        for bm in nl.affine_range(TILES_IN_BLOCK_M):
            col = (m * TILES_IN_BLOCK_M + bm) * TILE_M
            for k in nl.affine_range(KT):
                nisa.dma_copy(dst=lhsT_tiles[:, bm, k, :], src=lhsT[k * TILE_K:(k + 1) * TILE_K, col:col + TILE_M])
        for n in nl.affine_range(N // BLOCK_N):
            rhs_tiles = nl.ndarray((TILE_K, TILES_IN_BLOCK_N, KT, TILE_N), dtype=rhs.dtype, buffer=nl.sbuf)
            for bn in nl.affine_range(TILES_IN_BLOCK_N):
                col = (n * TILES_IN_BLOCK_N + bn) * TILE_N
                for k in nl.affine_range(KT):
                    nisa.dma_copy(dst=rhs_tiles[:, bn, k, :], src=rhs[k * TILE_K:(k + 1) * TILE_K, col:col + TILE_N])
            for bm in nl.affine_range(TILES_IN_BLOCK_M):
                for bn in nl.affine_range(TILES_IN_BLOCK_N):
                    res_psum = nl.ndarray((TILE_M, TILE_N), dtype=nl.float32, buffer=nl.psum)
                    for k in nl.affine_range(KT):
                        nisa.nc_matmul(dst=res_psum, stationary=lhsT_tiles[:, bm, k, :],
                                       moving=rhs_tiles[:, bn, k, :], accumulate=k > 0)
                    res_sb = nl.ndarray((TILE_M, TILE_N), dtype=result.dtype, buffer=nl.sbuf)
                    nisa.tensor_copy(dst=res_sb, src=res_psum)
                    row = (m * TILES_IN_BLOCK_M + bm) * TILE_M
                    col = (n * TILES_IN_BLOCK_N + bn) * TILE_N
                    nisa.dma_copy(dst=result[row:row + TILE_M, col:col + TILE_N], src=res_sb)
    return result


@nki.jit
def matmul_blocked(lhsT, rhs, out_dtype=None, TILES_IN_BLOCK_M=16, TILES_IN_BLOCK_N=2, TILES_IN_BLOCK_K=8):
    """Step 4: block M, N and K. Each DMA moves a [128, BLOCK] row band (wide contiguous rows);
    PSUM partial sums over a K block are added into an SBUF result block; results leave in
    [128, BLOCK_N] bands."""
    BLOCK_M, BLOCK_N, BLOCK_K = TILE_M * TILES_IN_BLOCK_M, TILE_N * TILES_IN_BLOCK_N, TILE_K * TILES_IN_BLOCK_K
    K, M, N = _shapes(lhsT, rhs, "matmul_blocked", BLOCK_M, BLOCK_N, BLOCK_K)
    NUM_BLOCK_M, NUM_BLOCK_N, NUM_BLOCK_K = M // BLOCK_M, N // BLOCK_N, K // BLOCK_K
    result = nl.ndarray((M, N), dtype=out_dtype or lhsT.dtype, buffer=nl.shared_hbm)
    for n in nl.affine_range(NUM_BLOCK_N):
        # nl.zeros in the tutorial: the compiler emits a memset
        result_tiles = nl.ndarray((TILE_M, NUM_BLOCK_M, TILES_IN_BLOCK_M, TILES_IN_BLOCK_N, TILE_N),
                                  dtype=result.dtype, buffer=nl.sbuf)
        for m in nl.affine_range(NUM_BLOCK_M):
            nisa.memset(dst=result_tiles[:, m], value=0.0)
        for k in nl.sequential_range(NUM_BLOCK_K):
            rhs_tiles = nl.ndarray((TILE_K, TILES_IN_BLOCK_K, BLOCK_N), dtype=rhs.dtype, buffer=nl.sbuf)
            for bk in nl.affine_range(TILES_IN_BLOCK_K):
                row = (k * TILES_IN_BLOCK_K + bk) * TILE_K
                nisa.dma_copy(dst=rhs_tiles[:, bk, :], src=rhs[row:row + TILE_K, n * BLOCK_N:(n + 1) * BLOCK_N])
            for m in nl.affine_range(NUM_BLOCK_M):
                lhsT_tiles = nl.ndarray((TILE_K, TILES_IN_BLOCK_K, BLOCK_M), dtype=lhsT.dtype, buffer=nl.sbuf)
                for bk in nl.affine_range(TILES_IN_BLOCK_K):
                    row = (k * TILES_IN_BLOCK_K + bk) * TILE_K
                    nisa.dma_copy(dst=lhsT_tiles[:, bk, :], src=lhsT[row:row + TILE_K, m * BLOCK_M:(m + 1) * BLOCK_M])
                for bn in nl.affine_range(TILES_IN_BLOCK_N):
                    for bm in nl.affine_range(TILES_IN_BLOCK_M):
                        res_tile = nl.ndarray((TILE_M, TILE_N), dtype=nl.float32, buffer=nl.psum)
                        for bk in nl.affine_range(TILES_IN_BLOCK_K):
                            nisa.nc_matmul(dst=res_tile,
                                           stationary=lhsT_tiles[:, bk, bm * TILE_M:(bm + 1) * TILE_M],
                                           moving=rhs_tiles[:, bk, bn * TILE_N:(bn + 1) * TILE_N],
                                           accumulate=bk > 0)
                        nisa.tensor_tensor(dst=result_tiles[:, m, bm, bn, :], data1=result_tiles[:, m, bm, bn, :],
                                           data2=res_tile, op=nl.add)
        for m in nl.affine_range(NUM_BLOCK_M):
            for bm in nl.affine_range(TILES_IN_BLOCK_M):
                result_packed = nl.ndarray((TILE_M, BLOCK_N), dtype=result.dtype, buffer=nl.sbuf)
                for bn in nl.affine_range(TILES_IN_BLOCK_N):
                    nisa.tensor_copy(dst=result_packed[:, bn * TILE_N:(bn + 1) * TILE_N],
                                     src=result_tiles[:, m, bm, bn, :])
                row = (m * TILES_IN_BLOCK_M + bm) * TILE_M
                nisa.dma_copy(dst=result[row:row + TILE_M, n * BLOCK_N:(n + 1) * BLOCK_N], src=result_packed)
    return result


STEPS = {"step1_tiled": matmul_tiled, "step2_hoist_load": matmul_hoist_load,
         "step3_block_free": matmul_block_free, "step4_blocked": matmul_blocked}


def reference(lhsT, rhs, out_dtype=None):
    """numpy: fp32 product of the (rounded) inputs, cast to out_dtype (default: input dtype)."""
    out = np.asarray(lhsT, np.float32).T @ np.asarray(rhs, np.float32)
    return out.astype(out_dtype or np.asarray(lhsT).dtype)


def example_inputs(K=1024, M=2048, N=1024, seed=0):
    """bf16 lhsT [K, M] and rhs [K, N] (defaults fit every step's block sizes)."""
    import ml_dtypes
    rng = np.random.default_rng(seed)
    lhsT = rng.standard_normal((K, M), dtype=np.float32).astype(ml_dtypes.bfloat16)
    rhs = rng.standard_normal((K, N), dtype=np.float32).astype(ml_dtypes.bfloat16)
    return lhsT, rhs
