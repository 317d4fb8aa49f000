"""General matrix multiply on the Tensor engine: out[M, N] = a[M, K] @ b[K, N] (+ bias[N]).

Public kernel (@nki.jit): gemm(a, b, bias=None) -> new [M, N] in a.dtype.
Model-path entry: gemm_into(out, a, b, bias=None) writes an existing HBM view.
a and b are HBM views (any strides). Blocking: a block of up to 4 x 128 rows of a is transposed
into SBUF once (DMA transpose) and stays resident as the stationary operand; b streams through a
ring of [128, 512] tiles (moving operand); each [128, 512] output tile accumulates over K in one
PSUM bank in fp32 and is evacuated (plus bias) by the Vector or Scalar engine, alternately.

Transposed operands (the views training graphs pass: x @ w.T forward, dy.T @ x for weight
gradients) are read in the layout they are stored in: a K-major `a` is loaded by plain DMA (its
transpose is the stored layout), and an N-major `b` by DMA transpose, never by element-strided DMA,
which moves one element per descriptor.
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
from trnlab.core import dtypes as dt
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._common import P, ceil_div, float_dtype_for, load_as, load_transposed, psum, sbuf

TN = 512          # moving free size = one PSUM bank of fp32
RING = 8          # moving tiles in flight (DMA prefetch depth)


def _row_block(k: int, itemsize: int) -> int:
    """How many 128-row tiles of a stay resident: the transposed block uses <= 1/2 of SBUF."""
    budget = nl.tile_size.total_available_sbuf_size // 2
    per_tile = ceil_div(k, P) * P * itemsize
    return max(1, min(4, budget // per_tile))


@nki.jit
def gemm(a, b, bias=None):
    out = nl.ndarray((a.shape[0], b.shape[1]), dtype=a.dtype, buffer=nl.shared_hbm)
    return gemm_into(out, a, b, bias)


def gemm_into(out, a, b, bias=None):
    M, K = a.shape
    N = b.shape[1]
    cdt = float_dtype_for(a, b)
    isz = dt.itemsize(cdt)
    nk = ceil_div(K, P)
    ksizes = [min(P, K - k * P) for k in range(nk)]
    mb = _row_block(K, isz) * P
    ring = [sbuf((P, TN), cdt, name=f"mov{i}") for i in range(RING)]
    step = 0
    for m0 in range(0, M, mb):
        msz_b = min(mb, M - m0)
        m_sizes = [min(P, msz_b - i * P) for i in range(ceil_div(msz_b, P))]
        stationary = []            # [k][i] views, reused for every n block
        for k, ksz in enumerate(ksizes):
            t = _load_kmajor(a[m0:m0 + msz_b, k * P:k * P + ksz], cdt, name=f"aT{k}")
            stationary.append([t.index((slice(None), slice(i * P, i * P + msz))) for i, msz in enumerate(m_sizes)])
        for n0 in range(0, N, TN):
            nsz = min(TN, N - n0)
            bias_t = None
            if bias is not None:
                bias_t = sbuf((P, TN), nl.float32, name="bias")
                row = bias.reshape(1, N)[:, n0:n0 + nsz]
                nisa.dma_copy(dst=bias_t[:m_sizes[0], :nsz], src=row.broadcast_to((m_sizes[0], nsz)))
            acc = [psum((P, TN), name=f"acc{i}").index((slice(0, msz), slice(0, nsz)))
                   for i, msz in enumerate(m_sizes)]
            for k, ksz in enumerate(ksizes):
                block = b[k * P:k * P + ksz, n0:n0 + nsz]
                if column_major(b):
                    mov = load_transposed(block.permute(1, 0), cdt, name="movT")
                else:
                    mov = ring[step % RING].index((slice(0, ksz), slice(0, nsz)))
                    step += 1
                    nisa.dma_copy(dst=mov, src=block)
                for i in range(len(m_sizes)):
                    nisa.nc_matmul(dst=acc[i], stationary=stationary[k][i], moving=mov, accumulate=k > 0)
            for i, msz in enumerate(m_sizes):
                res = sbuf((P, TN), out.dtype, name="res")[:msz, :nsz]
                if bias_t is not None:
                    nisa.tensor_tensor(dst=res, data1=acc[i], data2=bias_t[:msz, :nsz], op=nl.add)
                elif i % 2 == 0:
                    nisa.tensor_copy(dst=res, src=acc[i])
                else:
                    nisa.activation(dst=res, op=nl.copy, data=acc[i])
                r0 = m0 + i * P
                nisa.dma_copy(dst=out[r0:r0 + msz, n0:n0 + nsz], src=res)
    return out


def column_major(t) -> bool:
    """A 2-D HBM view whose columns are contiguous (a transposed row-major tensor)."""
    rows, cols = t.strides
    return t.shape[0] > 1 and t.shape[1] > 1 and abs(rows) == 1 and abs(cols) > 1


def _load_kmajor(block, dtype, name):
    """SBUF [K, M] = block[M, K]^T: a plain DMA when the block is stored K-major, else DMA transpose."""
    if column_major(block):
        return load_as(block.permute(1, 0), dtype, name=name)
    return load_transposed(block, dtype, name=name)


def reference(a, b, bias=None):
    y = np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float32)
    return y.astype(np.asarray(a).dtype)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """a [512 * shape_scale, 1024], b [1024, 1024], bias [1024] (a linear layer)."""
    rng = np.random.default_rng(seed)
    m = scaled(512, shape_scale)
    return randn(rng, (m, 1024), dtype), randn(rng, (1024, 1024), dtype, std=1 / 32), randn(rng, (1024,), dtype)
