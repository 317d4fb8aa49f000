"""Indirect DMA: embedding gather and row scatter (index_copy) along one dim.

The indices are DMA'd into SBUF (int32, one per partition) and one indirect DMA moves the rows."""
from __future__ import annotations

from trnlab.core.machine import current
from trnlab.core.srcloc import user_location
from trnlab.isa.instructions import DmaGather
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.torch.kernels.common import P, sbuf


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


def scatter_rows(dst, src, index):
    """dst[index[i], ...] = src[i, ...] in place (dst [T, ...], src [N, ...])."""
    n = index.shape[0]
    for i0 in range(0, n, P):
        i1 = min(n, i0 + P)
        idx = _index_tile(index, i0, i1)
        current().issue(DmaGather(api="indirect dma_copy (scatter)", loc=user_location(), dst=dst,
                                  src=src[i0:i1], index=idx, scatter=True))
    return dst
