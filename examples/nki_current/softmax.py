"""Row softmax of a [N, D] bfloat16 matrix, written twice: with nki.isa instructions (max-subtracted exp
with a fused row sum on the Scalar engine), and with the nki.language convenience function nl.softmax.

    trnlab run examples/nki_current/softmax.py
"""
import ml_dtypes
import numpy as np

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def softmax_isa_kernel(x):
    N, D = x.shape
    P = nl.tile_size.pmax
    out = nl.ndarray((N, D), dtype=x.dtype, buffer=nl.shared_hbm)
    for i in nl.affine_range(N // P):
        xt = nl.ndarray((P, D), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=xt, src=x[i * P:(i + 1) * P, :])

        neg_max = nl.ndarray((P, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_reduce(dst=neg_max, op=nl.maximum, data=xt, axis=1, negate=True)

        exp_t = nl.ndarray((P, D), dtype=nl.float32, buffer=nl.sbuf)
        row_sum = nl.ndarray((P, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.activation_reduce(dst=exp_t, op=nl.exp, data=xt, bias=neg_max,
                               reduce_op=nl.add, reduce_res=row_sum)

        inv_sum = nl.ndarray((P, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.reciprocal(dst=inv_sum, data=row_sum)

        yt = nl.ndarray((P, D), dtype=x.dtype, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=yt, data=exp_t, op0=nl.multiply, operand0=inv_sum)
        nisa.dma_copy(dst=out[i * P:(i + 1) * P, :], src=yt)
    return out


@nki.jit
def softmax_nl_kernel(x):
    N, D = x.shape
    P = nl.tile_size.pmax
    out = nl.ndarray((N, D), dtype=x.dtype, buffer=nl.shared_hbm)
    for i in nl.affine_range(N // P):
        xt = nl.load(x[i * P:(i + 1) * P, :])
        nl.store(out[i * P:(i + 1) * P, :], nl.softmax(xt, axis=1))
    return out


def reference(x):
    x = x.astype(np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


if __name__ == "__main__":
    np.random.seed(0)
    x = (np.random.randn(256, 384) * 3).astype(ml_dtypes.bfloat16)
    expected = reference(x)
    for kernel in (softmax_isa_kernel, softmax_nl_kernel):
        y = nki.simulate(kernel)(x).astype(np.float32)
        # tolerance: one bf16 rounding of the output (2^-8 relative) plus fp32 noise
        assert np.allclose(y, expected, rtol=2 ** -8, atol=1e-6), np.abs(y - expected).max()
    print("softmax: PASS")
