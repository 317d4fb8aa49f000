"""Layer normalisation over the last dim: out = (x - mean) * rsqrt(var + eps) * gamma + beta.

Public kernel (@nki.jit): layernorm(x, gamma=None, beta=None, eps=1e-5) -> new tensor. Model-path
entry on existing HBM views: layernorm_into(out, x, gamma=None, beta=None, eps=1e-5).
Layout: x is an HBM tensor [..., D] (any leading dims and strides, walked as rows, 128 per tile);
gamma and beta are [D] or None. Statistics are fp32; the result is rounded once to x.dtype.

Per row tile:
  stats = bn_stats(x[:, 512-element chunks])       (count, mean, var*count) x 2 per chunk  Vector
  mean, var = bn_aggr(stats)                                                                 Vector
  rstd = rsqrt(var + eps)                           activation(rsqrt, bias=eps)              Scalar
  y = (x - mean) * rstd                             tensor_scalar (two ops)                  Vector
  out = y * gamma + beta                            tensor_tensor                            Vector
gamma and beta are broadcast to all partitions by the DMA (a stride-0 partition view of HBM).
Rows longer than ROW_BUDGET bytes are read twice in CHUNK pieces instead of staying in SBUF.
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._common import row_tiles
from trnlab.kernels._layout import PMAX, ceil_div, tiles

CHUNK = 4096                 # free elements per instruction (a multiple of BN_FMAX)
BN_FMAX = 512                # nl.tile_size.bn_stats_fmax
ROW_BUDGET = 96 * 1024       # SBUF bytes per partition for a resident row, gamma and beta


@nki.jit
def layernorm(x, gamma=None, beta=None, eps=1e-5):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    return layernorm_into(out, x, gamma, beta, eps)


def layernorm_into(out, x, gamma=None, beta=None, eps=1e-5, mean=None, rstd=None):
    """out = layernorm(x); mean / rstd (optional [..., 1] views): each row's statistics (training
    saves them for the backward pass)."""
    d = x.shape[-1]
    params = [(name, t) for name, t in (("gamma", gamma), ("beta", beta)) if t is not None]
    resident = d * (x.itemsize + sum(t.itemsize for _, t in params)) <= ROW_BUDGET
    cached = {name: [_broadcast_rows(t, c0, nc) for c0, nc in tiles(d, CHUNK)] for name, t in params} \
        if resident else None
    eps_t = nl.ndarray((PMAX, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.memset(dst=eps_t, value=float(eps))
    stats_out = [t for t in (mean, rstd) if t is not None]
    for rows, out_rows, *stat_rows in row_tiles(x, out, *stats_out):
        nr = rows.shape[0]
        x_tiles = [] if resident else None
        stats = nl.ndarray((nr, 6 * ceil_div(d, BN_FMAX)), dtype=nl.float32, buffer=nl.sbuf)
        for c0, nc in tiles(d, CHUNK):
            xt = _load(rows, c0, nc)
            for b0, nb in tiles(nc, BN_FMAX):
                j = 6 * ((c0 + b0) // BN_FMAX)
                nisa.bn_stats(dst=stats[:, j:j + 6], data=xt[:, b0:b0 + nb])
            if resident:
                x_tiles.append(xt)
        mean_var = nl.ndarray((nr, 2), dtype=nl.float32, buffer=nl.sbuf)
        nisa.bn_aggr(dst=mean_var, data=stats)
        rstd_t = nl.ndarray((nr, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.activation(dst=rstd_t, op=nl.rsqrt, data=mean_var[:, 1:2], bias=eps_t[:nr, :])
        for view, stat in zip(stat_rows, [s for s, t in ((mean_var[:, 0:1], mean), (rstd_t, rstd)) if t is not None]):
            st = nl.ndarray((nr, 1), dtype=view.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=st, src=stat)
            nisa.dma_copy(dst=view, src=st)
        for i, (c0, nc) in enumerate(tiles(d, CHUNK)):
            xt = x_tiles[i] if resident else _load(rows, c0, nc)
            p = {name: (cached[name][i] if resident else _broadcast_rows(t, c0, nc))[:nr, :]
                 for name, t in params}
            ot = _normalise(xt, mean_var[:, 0:1], rstd_t, p.get("gamma"), p.get("beta"), out.dtype)
            nisa.dma_copy(dst=_cols(out_rows, c0, nc), src=ot)
    return out


def _normalise(xt, mean, rstd, gamma, beta, dtype):
    nr, nc = xt.shape
    ot = nl.ndarray((nr, nc), dtype=dtype, buffer=nl.sbuf)
    y = ot if gamma is None and beta is None else nl.ndarray((nr, nc), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=y, data=xt, op0=nl.subtract, operand0=mean, op1=nl.multiply, operand1=rstd)
    if gamma is not None:
        nisa.tensor_tensor(dst=ot if beta is None else y, data1=y, data2=gamma, op=nl.multiply)
    if beta is not None:
        nisa.tensor_tensor(dst=ot, data1=y, data2=beta, op=nl.add)
    return ot


def _cols(view, c0, nc):
    return view.index((slice(None), slice(c0, c0 + nc)))


def _load(rows, c0, nc):
    t = nl.ndarray((rows.shape[0], nc), dtype=rows.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=_cols(rows, c0, nc))
    return t


def _broadcast_rows(vec, c0, nc):
    """vec[c0:c0+nc] copied into every partition of a [128, nc] tile."""
    t = nl.ndarray((PMAX, nc), dtype=vec.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=_cols(vec.reshape(1, vec.shape[0]), c0, nc).broadcast_to((PMAX, nc)))
    return t


def reference(x, gamma=None, beta=None, eps=1e-5):
    x32 = np.asarray(x, dtype=np.float32)
    mean = x32.mean(axis=-1, keepdims=True)
    var = np.square(x32 - mean).mean(axis=-1, keepdims=True)
    y = (x32 - mean) / np.sqrt(var + np.float32(eps))
    if gamma is not None:
        y = y * np.asarray(gamma, dtype=np.float32)
    if beta is not None:
        y = y + np.asarray(beta, dtype=np.float32)
    return y.astype(np.asarray(x).dtype)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """x: [512 * shape_scale, 2048] (mean 1, so centring matters), gamma, beta: [2048]."""
    rng = np.random.default_rng(seed)
    x = randn(rng, (scaled(512, shape_scale), 2048), dtype, mean=1.0)
    return x, randn(rng, (2048,), dtype), randn(rng, (2048,), dtype)
