"""Helpers shared by the kernels that work on HBM views of any strides (the model path's entry points):
tiles, strided HBM views, elementwise and row plans, split DMAs, DMA-transposed loads."""
from __future__ import annotations

import math

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.errors import ShapeError
from trnlab.kernels._layout import PMAX, ceil_div
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl

P = PMAX                # partitions
COLS = 2048             # free-size chunk of elementwise / row kernels (elements per partition)
NEG_BIG = -3.0e38       # "minus infinity" that stays finite through exp/subtract


def sbuf(shape, dtype, name="t"):
    return nl.ndarray(tuple(shape), dtype=dtype, buffer=nl.sbuf, name=name)


def psum(shape, name="ps", dtype=nl.float32):
    return nl.ndarray(tuple(shape), dtype=dtype, buffer=nl.psum, name=name)


def strided(t, shape, strides):
    """A view of t's storage with the given shape and element strides, starting at t's first element
    (the NKI access pattern t.ap([[stride, count], ...], offset))."""
    return t.ap([[int(s), int(n)] for s, n in zip(strides, shape)], offset=t.offset, dtype=t.dtype)


def strides_as(t, shape) -> list[int]:
    """Element strides of t broadcast to shape (numpy rules: a missing or size-1 dim repeats, stride 0)."""
    shape = tuple(shape)
    lead = len(shape) - t.ndim
    if lead < 0 or any(n not in (1, m) for n, m in zip(t.shape, shape[lead:])):
        raise ShapeError(f"cannot broadcast {t.describe()} to {list(shape)}")
    return [0] * lead + [s if n == m else 0 for s, n, m in zip(t.strides, t.shape, shape[lead:])]


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


MIN_RUN = 512      # elements per partition row kept contiguous when the innermost dim is split
SHORT_RUN = 128    # ... or this many when the outer dims would fill fewer than a quarter of the partitions


class TilePlan:
    """How an elementwise pass walks its output: one dim on the partitions (128 at a time), the
    innermost dims in the free dims (up to COLS elements per partition), the rest looped over."""

    def __init__(self, out, operands, budget: int = COLS):
        shape = tuple(out.shape)
        cshape, cstrides = coalesce(shape, [strides_as(t, shape) for t in (out, *operands)])
        if len(cshape) == 1:
            c = cshape[0]
            if c >= 2 * P and c % P == 0:                  # fold a long vector onto the partitions
                cshape, cstrides = [P, c // P], [[st[0] * (c // P), st[0]] for st in cstrides]
            else:
                cshape, cstrides = [1, c], [[0, st[0]] for st in cstrides]
        elif cshape[-1] % P == 0 and (
                (max(min(n, P) for n in cshape[:-1]) < P and cshape[-1] >= P * MIN_RUN)
                or (max(cshape[:-1]) < P // 4 and cshape[-1] >= P * SHORT_RUN)):
            # few outer rows (e.g. 4 heads of [heads, seq*dim] beside a broadcast table): the innermost
            # dim goes onto the partitions too, not 4 of the 128 lanes
            c = cshape[-1]
            cshape = cshape[:-1] + [P, c // P]
            cstrides = [st[:-1] + [st[-1] * (c // P), st[-1]] for st in cstrides]
        n = len(cshape)
        self.p = max(range(n - 1), key=lambda i: (min(cshape[i], P), cshape[i]))
        free = [i for i in range(n) if i != self.p]
        full, prod, j = [], 1, len(free) - 1
        while j >= 0 and prod * cshape[free[j]] <= budget:
            prod *= cshape[free[j]]
            full.insert(0, free[j])
            j -= 1
        self.chunk_dim = free[j] if j >= 0 else None
        self.chunk = max(1, budget // prod)
        self.loops = free[:j] if j > 0 else []
        self.full = full
        self.shape = cshape
        self.views = [strided(t, cshape, st) for t, st in zip([out] + list(operands), cstrides)]
        self.order = [self.p] + free
        self.tile_elems = prod * (min(self.chunk, cshape[self.chunk_dim]) if self.chunk_dim is not None else 1)

    def __iter__(self):
        """Yield per tile the [p, free...] views of out and of each operand."""
        sh = self.shape
        loop_sizes = [sh[d] for d in self.loops]
        chunk_n = sh[self.chunk_dim] if self.chunk_dim is not None else 1
        for idx in np.ndindex(*loop_sizes) if loop_sizes else [()]:
            fixed = dict(zip(self.loops, idx))
            for c0 in range(0, chunk_n, self.chunk):
                for p0 in range(0, sh[self.p], P):
                    key = []
                    for d in range(len(sh)):
                        if d == self.p:
                            key.append(slice(p0, min(sh[d], p0 + P)))
                        elif d in fixed:
                            key.append(fixed[d])
                        elif d == self.chunk_dim:
                            key.append(slice(c0, min(chunk_n, c0 + self.chunk)))
                        else:
                            key.append(slice(None))
                    yield [self._tile(v, key) for v in self.views]

    def _tile(self, view, key):
        t = view.index(tuple(key))
        kept = [d for d in range(len(key)) if isinstance(key[d], slice)]
        perm = [kept.index(d) for d in self.order if d in kept]
        t = t.permute(tuple(perm))
        return t if t.ndim >= 2 else t.reshape(t.shape[0], 1)


def row_plan(x, *others):
    """Views [outer..., rows, C_i] of x and others that share x's leading dims (last dims may differ)."""
    lead = tuple(x.shape[:-1])
    tensors = (x, *others)
    full = [strides_as(t, lead + (t.shape[-1],)) for t in tensors]
    cshape, cstrides = coalesce(lead, [st[:-1] for st in full])
    if len(cshape) == 1:
        cshape, cstrides = [1] + cshape, [[0] + s for s in cstrides]
    views = [strided(t, cshape + [t.shape[-1]], s + [st[-1]]) for t, st, s in zip(tensors, full, cstrides)]
    return tuple(cshape), views


def row_blocks(lead):
    """(outer index, r0, r1) of each block of <= 128 rows of a row_plan."""
    for idx in np.ndindex(*lead[:-1]) if len(lead) > 1 else [()]:
        for r0 in range(0, lead[-1], P):
            yield idx, r0, min(lead[-1], r0 + P)


def row_tiles(x, *others):
    """Per block of <= 128 rows (any leading dims and strides): [rows, C] views of x and others."""
    lead, views = row_plan(x, *others)
    for idx, r0, r1 in row_blocks(lead):
        yield [v.index(tuple(idx) + (slice(r0, r1),)) for v in views]


def free_broadcast(view) -> bool:
    """True when a tile view repeats one value per partition along all its free dims."""
    return view.ndim >= 2 and all(st == 0 for st in view.strides[1:]) and int(np.prod(view.shape[1:])) > 1


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


def load_transposed(src, dtype, name="T"):
    """SBUF tile [F, P] = src[P, F]^T from HBM by DMA transpose; converted on the Vector engine when
    the wanted dtype differs from the source's (dma_transpose moves bytes, it cannot convert)."""
    t = sbuf((src.shape[1], src.shape[0]), src.dtype, name=name)
    nisa.dma_transpose(dst=t, src=src, axes=(1, 0))
    return converted(t, dtype, name)


def load_as(src, dtype, name="T"):
    """SBUF tile = src by plain DMA, converted on the Vector engine when the wanted dtype differs."""
    t = sbuf(tuple(src.shape), src.dtype, name=name)
    nisa.dma_copy(dst=t, src=src)
    return converted(t, dtype, name)


def converted(t, dtype, name):
    """t itself when it has dtype, else a copy in dtype (Vector engine)."""
    if t.dtype == dtype:
        return t
    c = sbuf(t.shape, dtype, name=name)
    nisa.tensor_copy(dst=c, src=t)
    return c


def float_dtype_for(*tensors):
    """Compute dtype of tiles that feed the Tensor engine: the common input dtype, else fp32."""
    dts = {t.dtype for t in tensors}
    return dts.pop() if len(dts) == 1 and dt.is_float(next(iter(dts))) else nl.float32


__all__ = ["P", "COLS", "NEG_BIG", "sbuf", "psum", "strided", "strides_as", "ceil_div", "coalesce", "TilePlan",
           "free_broadcast", "row_plan", "row_blocks", "row_tiles", "dma_copy_split", "float_dtype_for", "math"]
