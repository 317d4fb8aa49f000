"""Rotary position embedding, rotate-half convention (Llama / Hugging Face):
out = x * cos + rotate_half(x) * sin, rotate_half(x) = concat(-x[..., D/2:], x[..., :D/2]).

Layout:
  x    [..., S, D]   e.g. q or k as [B, H, S, D]; leading dims are flattened into N = B*H slices
  cos  [S, D] shared by every slice, or [B, S, D] with x [B, H, S, D] (slice n uses cos[n // H])
  sin  same shape as cos (full D, halves duplicated as Hugging Face builds them)
The sequence goes on partitions, 128 positions per tile; a cos/sin tile is loaded once and reused
for every slice that shares it. Math is fp32; the result is rounded once to x.dtype.
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import ShapeError
from trnlab.kernels._examples import randn, rope_tables, scaled
from trnlab.kernels._layout import tiles


@nki.jit
def rope(x, cos, sin):
    s, d = x.shape[-2], x.shape[-1]
    if d % 2 or tuple(cos.shape) != tuple(sin.shape) or tuple(cos.shape[-2:]) != (s, d):
        raise ShapeError(f"rope: x {list(x.shape)} needs an even head dim and cos/sin [S, D] or "
                         f"[B, S, D] with S={s}, D={d}; got cos {list(cos.shape)}, sin {list(sin.shape)}")
    n = x.size // (s * d)
    groups = 1 if cos.ndim == 2 else cos.shape[0]
    if n % groups:
        raise ShapeError(f"rope: {n} slices of x {list(x.shape)} cannot share cos batches of {groups}")
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    x3, out3 = x.reshape(n, s, d), out.reshape(n, s, d)
    cos3, sin3 = cos.reshape(groups, s, d), sin.reshape(groups, s, d)
    per_group = n // groups
    for s0, ns in tiles(s):
        for g in range(groups):
            ct = _load(cos3[g, s0:s0 + ns, :])
            st = _load(sin3[g, s0:s0 + ns, :])
            for i in range(g * per_group, (g + 1) * per_group):
                _rotate(x3[i, s0:s0 + ns, :], ct, st, out3[i, s0:s0 + ns, :])
    return out


def _load(src):
    t = nl.ndarray(tuple(src.shape), dtype=src.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=src)
    return t


def _rotate(x_rows, ct, st, out_rows):
    ns, d = x_rows.shape
    h = d // 2
    xt = _load(x_rows)
    xcos = nl.ndarray((ns, d), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=xcos, data1=xt, data2=ct, op=nl.multiply)
    rot = nl.ndarray((ns, d), dtype=nl.float32, buffer=nl.sbuf)       # rotate_half(x) * sin
    nisa.scalar_tensor_tensor(dst=rot[:, :h], data=xt[:, h:], op0=nl.multiply, operand0=-1.0,
                              op1=nl.multiply, operand1=st[:, :h])
    nisa.tensor_tensor(dst=rot[:, h:], data1=xt[:, :h], data2=st[:, h:], op=nl.multiply)
    ot = nl.ndarray((ns, d), dtype=x_rows.dtype, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=ot, data1=xcos, data2=rot, op=nl.add)
    nisa.dma_copy(dst=out_rows, src=ot)


def reference(x, cos, sin):
    x32 = np.asarray(x, dtype=np.float32)
    c, s_ = np.asarray(cos, dtype=np.float32), np.asarray(sin, dtype=np.float32)
    if c.ndim == 3 and x32.ndim == 4:          # [B, S, D] -> [B, 1, S, D]
        c, s_ = c[:, None], s_[:, None]
    h = x32.shape[-1] // 2
    rot = np.concatenate([-x32[..., h:], x32[..., :h]], axis=-1)
    return (x32 * c + rot * s_).astype(np.asarray(x).dtype)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """x: [1, 8, 512 * shape_scale, 128] (q or k after the head split), cos, sin: [S, 128]."""
    rng = np.random.default_rng(seed)
    s = scaled(512, shape_scale)
    cos, sin = rope_tables(s, 128, dtype)
    return randn(rng, (1, 8, s, 128), dtype), cos, sin
