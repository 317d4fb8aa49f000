"""Helpers shared by the model-path kernels: tiles, strided HBM views, row plans, split DMAs."""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from trnlab.core import dtypes as dt
from trnlab.core.machine import current
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl

P = 128                 # partitions
COLS = 2048             # free-size chunk of elementwise / row kernels (elements per partition)
NEG_BIG = -3.0e38       # "minus infinity" that stays finite through exp/subtract


def sbuf(shape, dtype, name="t"):
    return nl.ndarray(tuple(shape), dtype=dtype, buffer=nl.sbuf, name=name)


def psum(shape, name="ps", dtype=nl.float32):
    return nl.ndarray(tuple(shape), dtype=dtype, buffer=nl.psum, name=name)


def chip():
    return current().chip


def strided(t, shape, strides_bytes, offset_bytes: int = 0):
    """A view of t's storage with the given shape/strides in bytes, starting at t's first element."""
    base = t.array
    if offset_bytes:
        flat = base.reshape(-1) if base.flags.c_contiguous else None
        assert flat is not None, "offset views need a contiguous base"
        base = flat[offset_bytes // base.itemsize:]
    return t._view(as_strided(base, shape=tuple(shape), strides=tuple(strides_bytes)))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def coalesce(shape, strides_list):
    """Merge adjacent dims that are contiguous for every operand (TensorIterator style).

    Returns (shape, [strides per operand]) with size-1 dims dropped; rank >= 1."""
    dims = [i for i, n in enumerate(shape) if n != 1]
    if not dims:
        return [1], [[0] for _ in strides_list]
    out_shape = [shape[dims[0]]]
    out_strides = [[s[dims[0]]] for s in strides_list]
    for i in dims[1:]:
        n = shape[i]
        if all(os[-1] == s[i] * n for os, s in zip(out_strides, strides_list)):
            out_shape[-1] *= n
            for os, s in zip(out_strides, strides_list):
                os[-1] = s[i]
        else:
            out_shape.append(n)
            for os, s in zip(out_strides, strides_list):
                os.append(s[i])
    return out_shape, out_strides


def row_plan(out, operands):
    """Plan an elementwise pass: views [outer..., rows, cols] for out and each operand (broadcast).

    operands are Tensors broadcastable to out.shape. When everything fits in fewer than 128 rows,
    the last dim is folded to put 128 rows on the partitions."""
    shape = tuple(out.shape)
    arrays = [out.array] + [np.broadcast_to(o.array, shape) for o in operands]
    cshape, cstrides = coalesce(shape, [list(a.strides) for a in arrays])
    if len(cshape) == 1:
        cshape, cstrides = [1] + cshape, [[0] + s for s in cstrides]
    rows_total = int(np.prod(cshape[:-1]))
    c = cshape[-1]
    if rows_total < P and c >= 2 * P and c % P == 0:
        f = c // P
        cshape = cshape[:-1] + [P, f]
        cstrides = [s[:-1] + [s[-1] * f, s[-1]] for s in cstrides]
    views = [strided(t, cshape, s) for t, s in zip([out] + list(operands), cstrides)]
    return tuple(cshape), views


def row_tiles(shape):
    """Yield (outer_index, r0, r1, c0, c1) covering a [outer..., rows, cols] plan."""
    outer, rows, cols = shape[:-2], shape[-2], shape[-1]
    for idx in np.ndindex(*outer) if outer else [()]:
        for r0 in range(0, rows, P):
            for c0 in range(0, cols, COLS):
                yield idx, r0, min(rows, r0 + P), c0, min(cols, c0 + COLS)


def tile_of(view, idx, r0, r1, c0, c1):
    return view.index(tuple(idx) + (slice(r0, r1), slice(c0, c1)))


def dma_copy_split(dst, src, min_bytes: int = 256 * 1024, max_pieces: int = 16):
    """Copy between same-shape views (HBM<->HBM), split along the leading dims so several DMA
    queues share a large transfer (each queue is one in-order engine)."""
    assert tuple(dst.shape) == tuple(src.shape), (dst.shape, src.shape)
    while dst.ndim > 1 and dst.shape[0] == 1:
        dst, src = dst.index((0,)), src.index((0,))
    pieces = int(max(1, min(max_pieces, dst.nbytes // max(1, min_bytes))))
    n = dst.shape[0] if dst.ndim else 1
    if pieces == 1 or n == 1:
        nisa.dma_copy(dst=dst, src=src)
        return
    step = ceil_div(n, min(pieces, n))
    for i in range(0, n, step):
        key = (slice(i, min(n, i + step)),)
        nisa.dma_copy(dst=dst.index(key), src=src.index(key))


def float_dtype_for(*tensors):
    """Compute dtype of tiles that feed the Tensor engine: the common input dtype, else fp32."""
    dts = {t.dtype for t in tensors}
    return dts.pop() if len(dts) == 1 and dt.is_float(next(iter(dts))) else nl.float32


__all__ = ["P", "COLS", "NEG_BIG", "sbuf", "psum", "chip", "strided", "ceil_div", "coalesce", "row_plan",
           "row_tiles", "tile_of", "dma_copy_split", "float_dtype_for", "math"]
