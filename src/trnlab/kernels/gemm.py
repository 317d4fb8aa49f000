"""General matrix multiply on the Tensor engine: out[M, N] = a[M, K] @ b[K, N] (+ bias[N]).

Public kernel (@nki.jit): gemm(a, b, bias=None) -> new [M, N] in a.dtype.
Model-path entry: gemm_into(out, a, b, bias=None) writes an existing HBM view.
a and b are HBM views (any strides). Blocking: a block of rows of a (8 tiles of 128 rows, more if
SBUF allows) is loaded K-major once and stays resident as the stationary operand; b is walked in
K-major column blocks of up to 512 (moving operand), each fetched one block ahead and used by every
row tile of the resident block, so b is read once per row block. Each [128, <=512] output tile
accumulates over K in one PSUM bank in fp32 and is evacuated (plus bias) by the Vector or Scalar
engine, alternately. When SBUF cannot hold such blocks with at least as many rows of a as streaming
would (long K: weight gradients over many tokens; fp32), b is streamed through a ring of [128, 512]
tiles against up to 4 resident row tiles of a (_streamed).

Transposed operands (the views training graphs pass: x @ w.T forward, dy.T @ x for weight
gradients) are read in the layout they are stored in. A K-major operand (a = dy.T, or a row-major
b) is loaded by plain DMA. A row-major operand whose K is contiguous (a = x, b = w.T) is loaded as
stored, in long contiguous rows, and transposed on the Tensor engine into PSUM (four 128x128 blocks
per bank) and copied to SBUF, as neuronx-cc does; the transposes of b's next column block are
spread over the current block's matmuls. With fewer than PE_MIN_ROWS rows of a (decode), with a
non-float dtype or when streaming, such operands are DMA-transposed instead; none is read by
element-strided DMA, which moves one element per descriptor.
"""
from __future__ import annotations

from functools import partial

import numpy as np

import trnlab.nki as nki
from trnlab.core import dtypes as dt
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._common import P, ceil_div, float_dtype_for, load_as, load_transposed, psum, sbuf

TN = 512          # moving free size = one PSUM bank of fp32
FETCH_COLS = 512   # columns of staged rows per DMA (1 KiB runs of bf16, as b's K-major tiles)
RING = 8          # moving tiles in flight when b is streamed (_streamed)
# Fewer rows of a than this: row-major operands are DMA-transposed instead of PE-transposed. A PE
# transpose of a 128x128 block of b is as much PE work as a 128-row matmul against it, so with few rows
# it would multiply the hardware FLOPs (HFU) of decode-sized GEMMs several times over.
PE_MIN_ROWS = 128
STAGE = 16 * 1024  # bytes per partition of a's rows staged at a time for PE transposes
RESERVE = 8 * 1024   # bytes per partition kept for the output and bias tiles
ROWS_WANTED = 8      # 128-row tiles of a worth narrowing b's blocks for (b is read M / (128 x this) times)


def _sbuf_budget() -> int:
    return nl.tile_size.total_available_sbuf_size


def _blocking(m: int, k: int, itemsize: int):
    """(rows of a held resident, columns of each block of b), or None when K is too long for both.

    SBUF per partition, beside a's staging (two generations) and the output tiles, holds a's block
    (b is re-read once per block: the more rows the better, up to ROWS_WANTED tiles) and four
    generations of b's K-major column block (the last block's, kept until the next is allocated so
    the two never share addresses, this block's, the next block's staged rows and its tiles): the
    widest block of b that still leaves a ROWS_WANTED tiles, else 128 columns and what is left."""
    per_tile = ceil_div(k, P) * P * itemsize
    per_col = ceil_div(k, P) * itemsize
    avail = _sbuf_budget() - 2 * STAGE - RESERVE
    want = min(ceil_div(m, P), ROWS_WANTED)
    for nb in (TN, TN // 2, P):
        tiles = (avail - 4 * per_col * nb) // per_tile
        if tiles >= want or (nb == P and tiles >= 1):
            blocks = ceil_div(ceil_div(m, P), tiles)
            return ceil_div(ceil_div(m, P), blocks) * P, nb
    return None


@nki.jit
def gemm(a, b, bias=None):
    out = nl.ndarray((a.shape[0], b.shape[1]), dtype=a.dtype, buffer=nl.shared_hbm)
    return gemm_into(out, a, b, bias)


def gemm_into(out, a, b, bias=None):
    M, K = a.shape
    N = b.shape[1]
    cdt = float_dtype_for(a, b)
    isz = dt.itemsize(cdt)
    ksizes = [min(P, K - k * P) for k in range(ceil_div(K, P))]
    blocking = _blocking(M, K, isz)
    pe_b = M >= PE_MIN_ROWS and b.strides[0] == 1 and dt.is_float(b.dtype)      # b = w.T: PE-transposed
    # resident blocks only when they keep at least the rows streaming would, and (b read by plain DMA)
    # runs of >= 256 columns: otherwise b is streamed, re-read as often, in longer DMA runs
    if blocking is None or min(M, blocking[0]) < min(M, _streamed_rows(K, isz) * P) or \
            not pe_b and blocking[1] < TN // 2:
        return _streamed(out, a, b, bias, cdt, ksizes)
    mb, nb = blocking
    blocks = [(m0, n0) for m0 in range(0, M, mb) for n0 in range(0, N, nb)]

    def b_block(j):
        n0 = blocks[j][1]
        src = b[:, n0:n0 + min(nb, N - n0)].permute(1, 0)
        return _finish(_fetch(src, ksizes, "bT", pe=M >= PE_MIN_ROWS), cdt, ksizes, "bT")

    moving, steps = b_block(0)
    _run(steps)
    stationary, held = None, []
    n_evac = 0
    for j, (m0, n0) in enumerate(blocks):
        msz_b, nsz = min(mb, M - m0), min(nb, N - n0)
        m_sizes = [min(P, msz_b - i * P) for i in range(ceil_div(msz_b, P))]
        if n0 == 0:
            stationary = None          # drop the last row block before loading the next (SBUF)
            stationary = _resident_rows(a[m0:m0 + msz_b, :], ksizes, m_sizes, cdt, pe=M >= PE_MIN_ROWS)
        # The next block of b is fetched before this block's matmuls and stores in program order (the
        # DMA queues run in order: a fetch issued after the stores would wait for them), and its
        # transposes are spread over the second half of this block's row tiles, so neither the PE
        # nor the copies leave a gap between blocks.
        steps = None                   # this block's staged rows (all transposed by now) are free
        nxt, steps = b_block(j + 1) if j + 1 < len(blocks) else (None, [])
        held.clear()                   # the block before this one stays allocated until the next is
        half = len(m_sizes) // 2
        share = ceil_div(len(steps), len(m_sizes) - half)
        bias_t = None
        if bias is not None:
            bias_t = sbuf((P, TN), nl.float32, name="bias")
            row = bias.reshape(1, N)[:, n0:n0 + nsz]
            nisa.dma_copy(dst=bias_t[:m_sizes[0], :nsz], src=row.broadcast_to((m_sizes[0], nsz)))
        for i, msz in enumerate(m_sizes):
            acc = psum((P, TN), name="acc").index((slice(0, msz), slice(0, nsz)))
            for k in range(len(ksizes)):
                nisa.nc_matmul(dst=acc, stationary=stationary[k][i], moving=moving[k], accumulate=k > 0)
            res = sbuf((P, TN), out.dtype, name="res")[:msz, :nsz]
            if bias_t is not None:
                nisa.tensor_tensor(dst=res, data1=acc, data2=bias_t[:msz, :nsz], op=nl.add)
            else:
                _copy(res, acc, n_evac)
                n_evac += 1
            r0 = m0 + i * P
            nisa.dma_copy(dst=out[r0:r0 + msz, n0:n0 + nsz], src=res)
            if i >= half:
                _run(steps[(i - half) * share:(i - half + 1) * share])
        held.append(moving)
        moving = nxt
    return out


def _resident_rows(a, ksizes, m_sizes, dtype, pe):
    """a[rows, K] K-major in SBUF as stationary views [k][i] ([ksz, msz] per row tile i), staged in
    column chunks of <= STAGE bytes per partition (a's own tiles are the big ones)."""
    a_t = []
    cw = max(P, STAGE // (len(m_sizes) * dt.itemsize(a.dtype)) // P * P)
    for c0 in range(0, a.shape[1], cw):
        ks = ksizes[c0 // P:(c0 + cw) // P]
        tiles, steps = _finish(_fetch(a[:, c0:c0 + sum(ks)], ks, "aT", pe=pe), dtype, ks, "aT")
        _run(steps)
        a_t += tiles
        del tiles, steps
    return [[t.index((slice(None), slice(i * P, i * P + msz))) for i, msz in enumerate(m_sizes)] for t in a_t]


def _streamed_rows(k: int, itemsize: int) -> int:
    """128-row tiles of a resident when b is streamed: the transposed block uses <= 1/2 of SBUF, and
    at most 4 (one PSUM bank each, double-buffered)."""
    return max(1, min(4, (_sbuf_budget() // 2) // (ceil_div(k, P) * P * itemsize)))


def _streamed(out, a, b, bias, cdt, ksizes):
    """b streamed through a ring of [128, 512] tiles (DMA-transposed when N-major) against a block of
    up to 4 row tiles of a (DMA-transposed when row-major): for a K too long for resident K-major
    column blocks of b at least 256 wide (those would mean short DMA runs or fewer rows of a)."""
    M, K = a.shape
    N = b.shape[1]
    mb = _streamed_rows(K, dt.itemsize(cdt)) * P
    ring = [sbuf((P, TN), cdt, name=f"mov{i}") for i in range(RING)]
    step = 0
    for m0 in range(0, M, mb):
        msz_b = min(mb, M - m0)
        m_sizes = [min(P, msz_b - i * P) for i in range(ceil_div(msz_b, P))]
        stationary = []            # [k][i] views, reused for every n block
        for k, ksz in enumerate(ksizes):
            t = _load_kmajor_tile(a[m0:m0 + msz_b, k * P:k * P + ksz], cdt, name=f"aT{k}")
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
                else:
                    _copy(res, acc[i], i)
                r0 = m0 + i * P
                nisa.dma_copy(dst=out[r0:r0 + msz, n0:n0 + nsz], src=res)
    return out


def _load_kmajor_tile(block, dtype, name):
    """SBUF [K, M] = block[M, K]^T: a plain DMA when the block is stored K-major, else DMA transpose."""
    if column_major(block):
        return load_as(block.permute(1, 0), dtype, name=name)
    return load_transposed(block, dtype, name=name)


def column_major(t) -> bool:
    """A 2-D HBM view whose columns are contiguous (a transposed row-major tensor)."""
    rows, cols = t.strides
    return t.shape[0] > 1 and t.shape[1] > 1 and abs(rows) == 1 and abs(cols) > 1


def _fetch(src, ksizes, name, pe=True):
    """The DMA half of loading src[R, K] K-major (per 128-column chunk k, a tile [ksz, R] = src[:, k]^T).

    Stored K-major (columns contiguous): plain DMA. Stored row-major with a float dtype: the rows as
    stored (long contiguous runs), to be transposed on the Tensor engine by _finish, as neuronx-cc
    does (pe=True). Otherwise DMA transpose. Returns (kind, tiles or staged rows, src)."""
    if column_major(src):
        return "tiles", [_dma(src[:, k * P:k * P + ksz].permute(1, 0), f"{name}{k}") for k, ksz in enumerate(ksizes)]
    if pe and src.strides[1] == 1 and dt.is_float(src.dtype):
        R = src.shape[0]
        rows = [sbuf((min(P, R - r), src.shape[1]), src.dtype, name=f"{name}_in") for r in range(0, R, P)]
        for c0 in range(0, src.shape[1], FETCH_COLS):       # in K order: the first transposes wait less
            for r, t in zip(range(0, R, P), rows):
                c1 = min(src.shape[1], c0 + FETCH_COLS)
                nisa.dma_copy(dst=t[:, c0:c1], src=src[r:r + t.shape[0], c0:c1])
        return "rows", rows
    tiles = []
    for k, ksz in enumerate(ksizes):
        t = sbuf((ksz, src.shape[0]), src.dtype, name=f"{name}{k}")
        nisa.dma_transpose(dst=t, src=src[:, k * P:k * P + ksz], axes=(1, 0))
        tiles.append(t)
    return "tiles", tiles


def _dma(src, name):
    t = sbuf(tuple(src.shape), src.dtype, name=name)
    nisa.dma_copy(dst=t, src=src)
    return t


def _finish(fetched, dtype, ksizes, name):
    """(per-k SBUF tiles [ksz, R] in dtype, the steps that fill them) from _fetch: converted (Vector)
    when the dtype differs, or transposed from staged rows on the Tensor engine: each 128x128 block
    into a PSUM bank, four row tiles side by side, the bank copied to SBUF (exact: the PE moves each
    value through fp32). Step k fills tile k; the caller runs them all before using the tiles."""
    kind, parts = fetched
    if kind == "tiles":
        tiles = [t if t.dtype == dtype else sbuf(t.shape, dtype, name=f"{name}{k}") for k, t in enumerate(parts)]
        return tiles, [partial(nisa.tensor_copy, dst=c, src=t) for c, t in zip(tiles, parts) if c is not t]
    rsizes = [t.shape[0] for t in parts]
    tiles = [sbuf((ksz, sum(rsizes)), dtype, name=f"{name}{k}") for k, ksz in enumerate(ksizes)]
    return tiles, [partial(_pe_transpose_chunk, parts, tiles[k], k) for k in range(len(ksizes))]


def _pe_transpose_chunk(rows, dst, k):
    """dst[ksz, R] = column chunk k of the staged row tiles, transposed on the PE via PSUM banks."""
    group = TN // P
    ksz = dst.shape[0]
    for g0 in range(0, len(rows), group):
        ps = psum((P, TN), name="T_ps")
        width = 0
        for j, r in enumerate(rows[g0:g0 + group]):
            nisa.nc_transpose(dst=ps[:ksz, j * P:j * P + r.shape[0]], data=r[:, k * P:k * P + ksz])
            width += r.shape[0]
        _copy(dst[:, g0 * P:g0 * P + width], ps[:ksz, :width], k + g0 // group)


def _run(steps):
    """Issue the steps (no loop variable left holding the last one, and with it its staged rows)."""
    for step in steps:
        step()


def _copy(dst, src, i):
    """PSUM -> SBUF copy, alternately on the Vector and the Scalar engine."""
    if i % 2 == 0:
        nisa.tensor_copy(dst=dst, src=src)
    else:
        nisa.activation(dst=dst, op=nl.copy, data=src)


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
