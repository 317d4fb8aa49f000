"""The four matmul-tutorial kernels against numpy (bf16 inputs, fp32 accumulation)."""
import ml_dtypes
import numpy as np
import pytest

from trnlab.errors import ShapeError
from trnlab.kernels import matmul as mm

K, M, N = 1024, 2048, 1024          # the smallest shape every step's blocking accepts


@pytest.fixture(scope="module")
def operands():
    return mm.example_inputs(K=K, M=M, N=N)


@pytest.mark.parametrize("name", list(mm.STEPS))
def test_fp32_output_matches_numpy(operands, name):
    lhsT, rhs = operands
    out = mm.STEPS[name](lhsT, rhs, out_dtype=np.float32)
    ref = lhsT.astype(np.float32).T @ rhs.astype(np.float32)
    assert out.dtype == np.float32 and out.shape == (M, N)
    # fp32 accumulation of exact bf16 products: only summation order differs (K=1024)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["step1_tiled", "step4_blocked"])
def test_bf16_output_matches_numpy(operands, name):
    lhsT, rhs = operands
    out = mm.STEPS[name](lhsT, rhs)
    ref = lhsT.astype(np.float32).T @ rhs.astype(np.float32)
    assert out.dtype == ml_dtypes.bfloat16
    # step 1 rounds once (2^-8 relative); step 4 keeps bf16 partial sums in SBUF per K block of 1024
    np.testing.assert_allclose(out.astype(np.float32), ref, rtol=2 ** -7, atol=2 ** -6 * np.abs(ref).max())


def test_small_shapes_for_simple_steps():
    lhsT, rhs = mm.example_inputs(K=256, M=128, N=512, seed=3)
    ref = lhsT.astype(np.float32).T @ rhs.astype(np.float32)
    for kernel in (mm.matmul_tiled, mm.matmul_hoist_load):
        np.testing.assert_allclose(kernel(lhsT, rhs, out_dtype=np.float32), ref, rtol=1e-5, atol=1e-3)


def test_shape_errors_name_the_limits():
    lhsT, rhs = mm.example_inputs(K=256, M=128, N=512)
    with pytest.raises(ShapeError, match="M % 2048"):
        mm.matmul_blocked(lhsT, rhs)
    with pytest.raises(ShapeError, match="contraction"):
        mm.matmul_tiled(lhsT, rhs[:128])


def test_fewer_dma_bytes_each_step(operands):
    import trnlab
    lhsT, rhs = operands
    moved = [trnlab.benchmark(k, target="trn1", numerics=False)(lhsT, rhs).dma_bytes for k in mm.STEPS.values()]
    # bf16 bytes by hand: lhsT A = K*M*2, rhs B = K*N*2, the bf16 result C = M*N*2 written once.
    a, b, c = K * M * 2, K * N * 2, M * N * 2
    assert moved == [
        (N // 512) * a + (M // 128) * b + c,     # step 1: lhsT tiles reloaded per N tile, rhs per M tile
        a + (M // 128) * b + c,                  # step 2: lhsT column loaded once per M tile
        a + (M // 256) * b + c,                  # step 3: rhs reloaded per block of 2 M tiles
        a + b + c,                               # step 4: one block in M, N and K: everything once
    ]
