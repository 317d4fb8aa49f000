"""Row softmax of a [300, 200] matrix whose row count is not a multiple of 128 (NKI Beta 1 style):
the last tile is masked, and a causal (lower-triangular) mask is applied with affine_select."""
import numpy as np
from neuronxcc import nki
import neuronxcc.nki.isa as nisa
import neuronxcc.nki.language as nl


@nki.baremetal
def masked_softmax_kernel(x):
    N, F = x.shape
    out = nl.ndarray((N, F), dtype=x.dtype, buffer=nl.shared_hbm)
    i_p, i_f = nl.mgrid[0:128, 0:F]

    for t in nl.affine_range((N + 127) // 128):
        rows = t * 128 + i_p
        tile = nl.load(x[rows, i_f], mask=(rows < N))
        # causal: row r may only see columns <= r
        valid = rows < N
        causal = nisa.affine_select(rows - i_f >= 0, tile, -9984.0, mask=valid)
        row_max = nl.max(causal, axis=[1], keepdims=True, mask=valid)
        shifted = nl.subtract(causal, row_max, mask=valid)
        e = nl.exp(shifted, mask=valid)
        total = nl.sum(e, axis=[1], keepdims=True, mask=valid)
        probs = nl.multiply(e, nl.reciprocal(total, mask=valid), mask=valid)
        nl.store(out[rows, i_f], value=probs, mask=valid)
    return out


if __name__ == "__main__":
    np.random.seed(1)
    x = np.random.randn(300, 200).astype(np.float32)
    y = masked_softmax_kernel(x)

    causal = np.where(np.tril(np.ones((300, 200), dtype=bool)), x, -9984.0)
    e = np.exp(causal - causal.max(axis=1, keepdims=True))
    ref = e / e.sum(axis=1, keepdims=True)
    assert np.allclose(y, ref, atol=1e-6)
    print("masked_softmax: output matches numpy")
