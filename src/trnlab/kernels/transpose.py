"""2-D transpose on the Tensor engine: out = x.T (or per matrix of a [B, M, N] batch).

Each 128x128 block goes SBUF -> nc_transpose -> PSUM -> tensor_copy -> SBUF -> HBM. The PE
transpose keeps the dtype (a PSUM tile of x.dtype), so values move bit-exactly. Edge blocks of
shapes not divisible by 128 are partial ([rows, cols] with rows, cols <= 128).
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import ShapeError
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._layout import PMAX, tiles


@nki.jit
def transpose(x):
    if x.ndim not in (2, 3):
        raise ShapeError(f"transpose: expects [M, N] or [B, M, N], got {list(x.shape)}")
    batched = x.ndim == 3
    out_shape = (x.shape[0], x.shape[2], x.shape[1]) if batched else (x.shape[1], x.shape[0])
    out = nl.ndarray(out_shape, dtype=x.dtype, buffer=nl.shared_hbm)
    for b in range(x.shape[0] if batched else 1):
        _transpose_matrix(x[b] if batched else x, out[b] if batched else out)
    return out


def _transpose_matrix(x, out):
    m, n = x.shape
    for m0, nm in tiles(m, PMAX):
        for n0, nn in tiles(n, PMAX):
            block = nl.ndarray((nm, nn), dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=block, src=x[m0:m0 + nm, n0:n0 + nn])
            flipped = nl.ndarray((nn, nm), dtype=x.dtype, buffer=nl.psum)
            nisa.nc_transpose(dst=flipped, data=block)
            result = nl.ndarray((nn, nm), dtype=x.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=result, src=flipped)
            nisa.dma_copy(dst=out[n0:n0 + nn, m0:m0 + nm], src=result)


def reference(x):
    x = np.asarray(x)
    return np.swapaxes(x, -1, -2).copy()


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """x: [512 * shape_scale, 1024]."""
    rng = np.random.default_rng(seed)
    return (randn(rng, (scaled(512, shape_scale), 1024), dtype),)
