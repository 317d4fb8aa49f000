"""Indirect DMA: embedding gather and row scatter (index_copy) along one dim.

The indices are DMA'd into SBUF (int32, one per partition) and one indirect DMA moves the rows.

Public kernel (@nki.jit): gather(table, index) -> table[index] (an embedding lookup), table [T, ...],
index [N] int32. Model-path entries on existing HBM views: gather_rows(out, table, index) and
scatter_rows(dst, src, index, accumulate=False).
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
from trnlab.core.machine import current
from trnlab.core.srcloc import user_location
from trnlab.isa.instructions import DmaGather
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._common import P, sbuf


@nki.jit
def gather(table, index):
    out = nl.ndarray((index.shape[0],) + tuple(table.shape[1:]), dtype=table.dtype, buffer=nl.shared_hbm)
    return gather_rows(out, table, index)


def _index_tile(index, i0, i1):
    t = sbuf((i1 - i0, 1), nl.int32, name="idx")
    nisa.dma_copy(dst=t, src=index[i0:i1].reshape(i1 - i0, 1))
    return t


def gather_rows(out, table, index):
    """out[i, ...] = table[index[i], ...]; out [N, ...], index [N] int32 in HBM."""
    n = index.shape[0]
    for i0 in range(0, n, P):
        i1 = min(n, i0 + P)
        idx = _index_tile(index, i0, i1)
        current().issue(DmaGather(api="indirect dma_copy (gather)", loc=user_location(), dst=out[i0:i1],
                                  src=table, index=idx))
    return out


def scatter_rows(dst, src, index, *, accumulate: bool = False):
    """dst[index[i], ...] = src[i, ...] in place (dst [T, ...], src [N, ...]); accumulate: += (NKI's
    dma_copy dst_rmw_op=add: repeated indices add up)."""
    n = index.shape[0]
    api = "indirect dma_copy (scatter, dst_rmw_op=add)" if accumulate else "indirect dma_copy (scatter)"
    for i0 in range(0, n, P):
        i1 = min(n, i0 + P)
        idx = _index_tile(index, i0, i1)
        current().issue(DmaGather(api=api, loc=user_location(), dst=dst, src=src[i0:i1], index=idx,
                                  scatter=True, accumulate=accumulate))
    return dst


def reference(table, index):
    return np.asarray(table)[np.asarray(index)]


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """An embedding lookup: table [4096, 1024], 512 * shape_scale int32 token ids."""
    rng = np.random.default_rng(seed)
    table = randn(rng, (4096, 1024), dtype)
    return table, rng.integers(0, 4096, size=scaled(512, shape_scale)).astype(np.int32)
