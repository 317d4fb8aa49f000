"""RMS normalisation over the last dim: out = x * rsqrt(mean(x^2) + eps) * weight.

Public kernel (@nki.jit): rmsnorm(x, weight=None, eps=1e-6) -> new tensor. Model-path entry on
existing HBM views: rmsnorm_into(out, x, weight=None, eps=1e-6).
Layout: x is an HBM tensor [..., D] (any leading dims and strides, walked as rows, 128 per tile);
weight is [D] or None. Statistics are fp32; the result is rounded once to x.dtype.

Per row tile:
  ms = sum((x / sqrt(D))^2)                         activation(square, scale) + accumulate  Scalar
  rstd = rsqrt(ms + eps)                            activation(rsqrt, bias=eps)             Scalar
  out = (x * rstd) * weight                         scalar_tensor_tensor                    Vector
The weight is broadcast to all partitions by the DMA (a stride-0 partition view of HBM).
Rows longer than ROW_BUDGET bytes are read twice in CHUNK pieces instead of staying in SBUF.
A few rows (SPREAD_ROWS or fewer, e.g. one decode token) with D a multiple of 128 are instead spread over the
128 partitions as [128, D/128] each: the partitions' sums of squares are added (and broadcast back) by one
matmul with an all-ones stationary (as trnlab.kernels.optim.total_norm), so Scalar and Vector work on 128
lanes instead of one (the hidden dim on partitions is also the layout the next GEMV contracts over, and the
hidden-major [hidden, tokens, batch] layout transformers-neuronx's decoder graphs use:
https://github.com/aws-neuron/transformers-neuronx/blob/main/src/transformers_neuronx/llama/hlo.py).
"""
from __future__ import annotations

import math

import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._common import row_tiles, strided
from trnlab.kernels._layout import PMAX, tiles

CHUNK = 4096                 # free elements per instruction
ROW_BUDGET = 96 * 1024       # SBUF bytes per partition for a resident row and weight
# [derived] a spread row costs ~D/128 element-steps per instruction plus a matmul; rows on partitions cost D
# for up to 128 rows at once: spreading pays for a handful of rows
SPREAD_ROWS = 8


@nki.jit
def rmsnorm(x, weight=None, eps=1e-6):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    return rmsnorm_into(out, x, weight, eps)


def rmsnorm_into(out, x, weight=None, eps=1e-6):
    d = x.shape[-1]
    if d % PMAX == 0 and d // PMAX <= CHUNK and math.prod(x.shape[:-1]) <= SPREAD_ROWS:
        return _rmsnorm_spread(out, x, weight, eps)
    w_bytes = weight.itemsize if weight is not None else 0
    resident = d * (x.itemsize + w_bytes) <= ROW_BUDGET
    # the weight goes to as many partitions as a row tile uses (one decode token: one, not 128)
    wrows = min(PMAX, max(1, math.prod(x.shape[:-1])))
    w_tiles = [_broadcast_rows(weight, c0, nc, wrows) for c0, nc in tiles(d, CHUNK)] \
        if resident and weight is not None else None
    eps_t = nl.ndarray((PMAX, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.memset(dst=eps_t, value=float(eps))
    for rows, out_rows in row_tiles(x, out):
        nr = rows.shape[0]
        x_tiles = [] if resident else None
        ms = nl.ndarray((nr, 1), dtype=nl.float32, buffer=nl.sbuf)
        for i, (c0, nc) in enumerate(tiles(d, CHUNK)):
            xt = _load(rows, c0, nc)
            squares = nl.ndarray((nr, nc), dtype=nl.float32, buffer=nl.sbuf)
            nisa.activation(dst=squares, op=nl.square, data=xt, scale=1.0 / math.sqrt(d),
                            reduce_cmd=nisa.reduce_cmd.reset_reduce if i == 0 else nisa.reduce_cmd.reduce,
                            reduce_op=nl.add, reduce_res=ms if c0 + nc == d else None)
            if resident:
                x_tiles.append(xt)
        rstd = nl.ndarray((nr, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.activation(dst=rstd, op=nl.rsqrt, data=ms, bias=eps_t[:nr, :])
        for i, (c0, nc) in enumerate(tiles(d, CHUNK)):
            xt = x_tiles[i] if resident else _load(rows, c0, nc)
            ot = nl.ndarray((nr, nc), dtype=out.dtype, buffer=nl.sbuf)
            if weight is None:
                nisa.tensor_scalar(dst=ot, data=xt, op0=nl.multiply, operand0=rstd)
            else:
                wt = w_tiles[i] if resident else _broadcast_rows(weight, c0, nc, nr)
                nisa.scalar_tensor_tensor(dst=ot, data=xt, op0=nl.multiply, operand0=rstd,
                                          op1=nl.multiply, operand1=wt[:nr, :])
            nisa.dma_copy(dst=_cols(out_rows, c0, nc), src=ot)
    return out


def _rmsnorm_spread(out, x, weight, eps):
    """Each row as a [128, D/128] tile: per-partition sums of squares, summed over partitions by one
    all-ones matmul (every partition gets the total), rsqrt, then scale (and weight) in place."""
    d = x.shape[-1]
    f = d // PMAX
    ones = nl.ndarray((PMAX, PMAX), dtype=nl.float32, buffer=nl.sbuf)
    nisa.memset(dst=ones, value=1.0)
    eps_t = nl.ndarray((PMAX, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.memset(dst=eps_t, value=float(eps))
    wt = None
    if weight is not None:
        wt = nl.ndarray((PMAX, f), dtype=weight.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=wt, src=_spread(weight.reshape(1, d), 0))
    for rows, out_rows in row_tiles(x, out):
        for r in range(rows.shape[0]):
            xt = nl.ndarray((PMAX, f), dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=xt, src=_spread(rows, r))
            squares = nl.ndarray((PMAX, f), dtype=nl.float32, buffer=nl.sbuf)
            part = nl.ndarray((PMAX, 1), dtype=nl.float32, buffer=nl.sbuf)
            nisa.activation(dst=squares, op=nl.square, data=xt, scale=1.0 / math.sqrt(d),
                            reduce_cmd=nisa.reduce_cmd.reset_reduce, reduce_op=nl.add, reduce_res=part)
            total = nl.ndarray((PMAX, 1), dtype=nl.float32, buffer=nl.psum)
            nisa.nc_matmul(dst=total, stationary=ones, moving=part)
            rstd = nl.ndarray((PMAX, 1), dtype=nl.float32, buffer=nl.sbuf)
            nisa.activation(dst=rstd, op=nl.rsqrt, data=total, bias=eps_t)
            ot = nl.ndarray((PMAX, f), dtype=out.dtype, buffer=nl.sbuf)
            if wt is None:
                nisa.tensor_scalar(dst=ot, data=xt, op0=nl.multiply, operand0=rstd)
            else:
                nisa.scalar_tensor_tensor(dst=ot, data=xt, op0=nl.multiply, operand0=rstd,
                                          op1=nl.multiply, operand1=wt)
            nisa.dma_copy(dst=_spread(out_rows, r), src=ot)
    return out


def _spread(view, r):
    """Row r of a [rows, D] view as [128, D/128]: partition p holds elements p*D/128 .. (p+1)*D/128 - 1."""
    row = view.index((slice(r, r + 1),))
    f = view.shape[-1] // PMAX
    step = row.strides[-1]
    return strided(row, (PMAX, f), (f * step, step))


def _cols(view, c0, nc):
    return view.index((slice(None), slice(c0, c0 + nc)))


def _load(rows, c0, nc):
    t = nl.ndarray((rows.shape[0], nc), dtype=rows.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=_cols(rows, c0, nc))
    return t


def _broadcast_rows(vec, c0, nc, rows=PMAX):
    """vec[c0:c0+nc] copied into each partition of a [rows, nc] tile."""
    t = nl.ndarray((rows, nc), dtype=vec.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=_cols(vec.reshape(1, vec.shape[0]), c0, nc).broadcast_to((rows, nc)))
    return t


def reference(x, weight=None, eps=1e-6):
    x32 = np.asarray(x, dtype=np.float32)
    y = x32 / np.sqrt(np.mean(x32 * x32, axis=-1, keepdims=True) + np.float32(eps))
    if weight is not None:
        y = y * np.asarray(weight, dtype=np.float32)
    return y.astype(np.asarray(x).dtype)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """x: [512 * shape_scale, 2048], weight: [2048]."""
    rng = np.random.default_rng(seed)
    return randn(rng, (scaled(512, shape_scale), 2048), dtype), randn(rng, (2048,), dtype)
