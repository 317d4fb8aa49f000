"""Elementwise tensor add: out = a + b.

Layout: a and b are HBM tensors of the same shape (any rank); leading dims are flattened into rows,
rows go to partitions 128 at a time and the last dim is streamed in chunks of COL_CHUNK elements.
The sum is computed by the Vector engine in fp32 and rounded once to a.dtype on write.
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import ShapeError
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._layout import as_rows, tiles

COL_CHUNK = 4096    # elements per partition per tile: 3 fp32 tiles = 48 KiB of a partition


@nki.jit
def add(a, b):
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(f"add: shapes differ: a {list(a.shape)}, b {list(b.shape)}")
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    a2, b2, out2 = as_rows(a), as_rows(b), as_rows(out)
    rows, cols = a2.shape
    for r0, nr in tiles(rows):
        for c0, nc in tiles(cols, COL_CHUNK):
            at = nl.ndarray((nr, nc), dtype=a.dtype, buffer=nl.sbuf)
            bt = nl.ndarray((nr, nc), dtype=b.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=at, src=a2[r0:r0 + nr, c0:c0 + nc])
            nisa.dma_copy(dst=bt, src=b2[r0:r0 + nr, c0:c0 + nc])
            ct = nl.ndarray((nr, nc), dtype=a.dtype, buffer=nl.sbuf)
            nisa.tensor_tensor(dst=ct, data1=at, data2=bt, op=nl.add)
            nisa.dma_copy(dst=out2[r0:r0 + nr, c0:c0 + nc], src=ct)
    return out


def reference(a, b):
    return (np.asarray(a, np.float32) + np.asarray(b, np.float32)).astype(np.asarray(a).dtype)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """a, b: [512 * shape_scale, 2048]."""
    rng = np.random.default_rng(seed)
    shape = (scaled(512, shape_scale), 2048)
    return randn(rng, shape, dtype), randn(rng, shape, dtype)
