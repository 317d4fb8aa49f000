"""Cumulative sum along the last dim: out[..., i] = sum(x[..., :i+1]).

Layout: x is an HBM tensor [..., N] (leading dims flattened into rows, 128 rows per tile; the scan
runs along the free dim of each partition). Each CHUNK of a row is one Vector-engine scan
  r[i] = (1 * r[i-1]) + x[i]            tensor_tensor_scan(op0=multiply, op1=add)
whose initial value is the last fp32 partial sum of the previous chunk, so the running sum stays
fp32 across the whole row; each chunk is rounded once to x.dtype on its way out.
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._layout import PMAX, as_rows, tiles

CHUNK = 4096                 # free elements per scan instruction


@nki.jit
def cumsum(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    x2, out2 = as_rows(x), as_rows(out)
    n = x2.shape[1]
    ones = nl.ndarray((PMAX, min(n, CHUNK)), dtype=nl.float32, buffer=nl.sbuf)
    nisa.memset(dst=ones, value=1.0)
    for r0, nr in tiles(x2.shape[0]):
        carry = 0.0
        for c0, nc in tiles(n, CHUNK):
            xt = nl.ndarray((nr, nc), dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=xt, src=x2[r0:r0 + nr, c0:c0 + nc])
            sums = nl.ndarray((nr, nc), dtype=nl.float32, buffer=nl.sbuf)
            nisa.tensor_tensor_scan(dst=sums, data0=ones[:nr, :nc], data1=xt, initial=carry,
                                    op0=nl.multiply, op1=nl.add)
            ot = sums
            if x.dtype != nl.float32:
                ot = nl.ndarray((nr, nc), dtype=x.dtype, buffer=nl.sbuf)
                nisa.tensor_copy(dst=ot, src=sums)
            nisa.dma_copy(dst=out2[r0:r0 + nr, c0:c0 + nc], src=ot)
            carry = sums[:, nc - 1:nc]
    return out


def reference(x):
    return np.cumsum(np.asarray(x, dtype=np.float32), axis=-1, dtype=np.float32).astype(np.asarray(x).dtype)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """x: [256 * shape_scale, 2048]."""
    rng = np.random.default_rng(seed)
    return (randn(rng, (scaled(256, shape_scale), 2048), dtype),)
