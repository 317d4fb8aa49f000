"""Row softmax over the last dim: out = exp(x - max) / sum(exp(x - max)) (or log_softmax).

Public kernel (@nki.jit): softmax(x) -> new tensor. Model-path entry on existing HBM views:
softmax_into(out, x, log=False) (log=True: out = x - max - log(sum(exp(x - max)))).
Layout: x is an HBM tensor [..., N] (any leading dims and strides); leading dims are walked as
rows, 128 rows per tile on partitions, a row along the free dim. Statistics (max, exp, sums) are
fp32 whatever x.dtype is; the result is rounded once to the output dtype.

Per row tile:
  negmax = -max(x)                                  tensor_reduce(max, negate=True)     Vector
  e = exp(x + negmax), rowsum = sum(e)              activation(exp, bias=negmax) with
                                                    the accumulate registers             Scalar
  out = e * (1 / rowsum)                            reciprocal + tensor_scalar           Vector
  log: out = x + (negmax - log(rowsum))             activation(log) + tensor_tensor +
                                                    tensor_scalar                        Scalar/Vector
A row that fits ROW_BUDGET bytes stays in SBUF (one HBM read); a longer row is streamed in
CHUNK-element pieces three times (max, sum, normalise) so SBUF use stays bounded.
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.kernels._common import row_tiles
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._layout import ceil_div, tiles

CHUNK = 4096                 # free elements per instruction
ROW_BUDGET = 96 * 1024       # SBUF bytes per partition for a resident row (x + fp32 exp)


@nki.jit
def softmax(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    return softmax_into(out, x)


def softmax_into(out, x, log=False):
    n = x.shape[-1]
    resident = n * (x.itemsize + 4) <= ROW_BUDGET
    for rows, out_rows in row_tiles(x, out):
        if resident:
            _softmax_resident(rows, out_rows, log)
        else:
            _softmax_streamed(rows, out_rows, log)
    return out


def _cols(view, c0, nc):
    return view.index((slice(None), slice(c0, c0 + nc)))


def _load(rows, c0, nc):
    t = nl.ndarray((rows.shape[0], nc), dtype=rows.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=_cols(rows, c0, nc))
    return t


def _scale_of(negmax, rowsum, log):
    """1 / rowsum for softmax; negmax - log(rowsum) (the bias to add to x) for log_softmax."""
    nr = negmax.shape[0]
    res = nl.ndarray((nr, 1), dtype=nl.float32, buffer=nl.sbuf)
    if log:
        nisa.activation(dst=res, op=nl.log, data=rowsum)
        nisa.tensor_tensor(dst=res, data1=negmax, data2=res, op=nl.subtract)
    else:
        nisa.reciprocal(dst=res, data=rowsum)
    return res


def _softmax_resident(rows, out_rows, log):
    nr, n = rows.shape
    xt = _load(rows, 0, n)
    negmax = nl.ndarray((nr, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=negmax, op=nl.max, data=xt, axis=1, negate=True)
    e = nl.ndarray((nr, n), dtype=nl.float32, buffer=nl.sbuf)
    rowsum = nl.ndarray((nr, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.activation(dst=e, op=nl.exp, data=xt, bias=negmax, reduce_op=nl.add, reduce_res=rowsum,
                    reduce_cmd=nisa.reduce_cmd.reset_reduce)
    factor = _scale_of(negmax, rowsum, log)
    ot = nl.ndarray((nr, n), dtype=out_rows.dtype, buffer=nl.sbuf)
    if log:
        nisa.tensor_scalar(dst=ot, data=xt, op0=nl.add, operand0=factor)
    else:
        nisa.tensor_scalar(dst=ot, data=e, op0=nl.multiply, operand0=factor)
    nisa.dma_copy(dst=out_rows, src=ot)


def _softmax_streamed(rows, out_rows, log):
    nr, n = rows.shape
    # pass 1: per-chunk maxima, then the row max (negated, ready to be an exp bias)
    chunk_max = nl.ndarray((nr, ceil_div(n, CHUNK)), dtype=nl.float32, buffer=nl.sbuf)
    for i, (c0, nc) in enumerate(tiles(n, CHUNK)):
        nisa.tensor_reduce(dst=chunk_max[:, i:i + 1], op=nl.max, data=_load(rows, c0, nc), axis=1)
    negmax = nl.ndarray((nr, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=negmax, op=nl.max, data=chunk_max, axis=1, negate=True)
    # pass 2: the Scalar engine's accumulate registers sum exp over all chunks
    rowsum = nl.ndarray((nr, 1), dtype=nl.float32, buffer=nl.sbuf)
    for i, (c0, nc) in enumerate(tiles(n, CHUNK)):
        e = nl.ndarray((nr, nc), dtype=nl.float32, buffer=nl.sbuf)
        last = c0 + nc == n
        nisa.activation(dst=e, op=nl.exp, data=_load(rows, c0, nc), bias=negmax,
                        reduce_cmd=nisa.reduce_cmd.reset_reduce if i == 0 else nisa.reduce_cmd.reduce,
                        reduce_op=nl.add, reduce_res=rowsum if last else None)
    factor = _scale_of(negmax, rowsum, log)
    # pass 3: recompute exp and normalise (log: shift x)
    for c0, nc in tiles(n, CHUNK):
        ot = nl.ndarray((nr, nc), dtype=out_rows.dtype, buffer=nl.sbuf)
        if log:
            nisa.tensor_scalar(dst=ot, data=_load(rows, c0, nc), op0=nl.add, operand0=factor)
        else:
            e = nl.ndarray((nr, nc), dtype=nl.float32, buffer=nl.sbuf)
            nisa.activation(dst=e, op=nl.exp, data=_load(rows, c0, nc), bias=negmax)
            nisa.tensor_scalar(dst=ot, data=e, op0=nl.multiply, operand0=factor)
        nisa.dma_copy(dst=_cols(out_rows, c0, nc), src=ot)


def reference(x):
    x32 = np.asarray(x, dtype=np.float32)
    e = np.exp(x32 - x32.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.asarray(x).dtype)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """x: [512 * shape_scale, 2048] (std 3 so the max subtraction matters)."""
    rng = np.random.default_rng(seed)
    return (randn(rng, (scaled(512, shape_scale), 2048), dtype, std=3.0),)
