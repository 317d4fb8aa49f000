"""Flash-attention forward: out = softmax(scale * q @ k.T + mask) @ v, never materialising the
full score matrix (online softmax over key blocks).

Layout (what a model path hands over after splitting heads):
  q     [B, Hq, Sq, D]   (also [H, S, D] or [S, D], read as B = 1 / H = 1)
  k, v  [B, Hkv, Sk, D]  Hq must be a multiple of Hkv: grouped-query attention maps query head h
                         to kv head h // (Hq // Hkv) (Hkv == Hq is ordinary multi-head attention)
  mask  optional additive mask [Sq, Sk] or [B|1, Hq|1, Sq, Sk] (e.g. 0 / -inf padding masks)
  causal=True           query i sees keys j <= i (top-left aligned, as torch's is_causal)
  scale=None            defaults to 1 / sqrt(D)
  returns [B, Hq, Sq, D] (the shape of q) in q.dtype. D <= 128 (the contraction runs on partitions).

Per kv head, k^T (PE transposes) and v are loaded once and shared by the query heads of its group
when they fit KV_BUDGET; longer sequences load them per key block instead.
Per 128-query tile, for each block of up to KBLOCK keys (blocks above the diagonal are skipped):
  s = scale * q k^T                      nc_matmul into PSUM (fp32), copied out with the scale
  causal: affine_select(q0 + p - k0 - j >= 0, s, NEG)                         GpSimd
  m_new = max(m, rowmax(s));  p = exp(s - m_new), rowsum = sum(p)             Vector / Scalar
  alpha = exp(m - m_new);  l = l * alpha + rowsum
  acc = acc * alpha + p @ v              p^T by PE transpose, matmuls accumulate in PSUM
out = acc / l. Statistics m, l, acc are fp32; p is rounded to q.dtype (bf16) for the PE, as on
hardware, and the output is rounded once to q.dtype.
"""
from __future__ import annotations

import math

import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core import dtypes as dt
from trnlab.errors import ShapeError
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._layout import PMAX, ceil_div, tiles

KBLOCK = 512            # keys per score block: one fp32 PSUM bank per query row
KV_BUDGET = 64 * 1024   # SBUF bytes per partition for one kv head's k^T and v kept resident
NEG = -3.0e38           # finite "minus infinity": exp(NEG - m) == 0 and NEG - NEG stays finite


@nki.jit
def flash_attention(q, k, v, mask=None, causal=True, scale=None):
    q4, k4, v4 = _as_4d(q), _as_4d(k), _as_4d(v)
    b, hq, sq, d = q4.shape
    hkv, sk = k4.shape[1], k4.shape[2]
    _check(q4, k4, v4, mask)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    out = nl.ndarray(q.shape, dtype=q.dtype, buffer=nl.shared_hbm)
    out4 = _as_4d(out)
    group = hq // hkv
    for bi in range(b):
        for g in range(hkv):
            keys = _key_source(k4[bi, g], v4[bi, g], q.dtype)
            for h in range(g * group, (g + 1) * group):
                for q0, nq in tiles(sq):
                    _attend_tile(q4[bi, h], keys, _mask_2d(mask, bi, h), out4[bi, h], q0, nq, causal, scale, sk)
    return out


def _as_4d(t):
    return t.reshape((1,) * (4 - t.ndim) + tuple(t.shape))


def _check(q4, k4, v4, mask):
    b, hq, sq, d = q4.shape
    if k4.shape != v4.shape or k4.shape[0] != b or k4.shape[3] != d or hq % k4.shape[1]:
        raise ShapeError(f"flash_attention: q {list(q4.shape)} needs k, v [B, Hkv, Sk, D] with Hq % Hkv == 0; "
                         f"got k {list(k4.shape)}, v {list(v4.shape)}")
    if d > PMAX:
        raise ShapeError(f"flash_attention: head dim {d} exceeds {PMAX} (the contraction runs on partitions)")
    if mask is not None:
        ok = mask.ndim in (2, 4) and tuple(mask.shape[-2:]) == (sq, k4.shape[2]) and (
            mask.ndim == 2 or (mask.shape[0] in (1, b) and mask.shape[1] in (1, hq)))
        if not ok:
            raise ShapeError(f"flash_attention: mask {list(mask.shape)} must be [Sq, Sk] or [B|1, Hq|1, Sq, Sk] "
                             f"with Sq={sq}, Sk={k4.shape[2]}")


def _mask_2d(mask, bi, h):
    if mask is None or mask.ndim == 2:
        return mask
    return mask[min(bi, mask.shape[0] - 1), min(h, mask.shape[1] - 1)]


def _transpose_into(dst, src):
    """dst [D, n] (SBUF) = src.T for [n, D] rows in HBM (n <= 128), via the PE transpose."""
    n, d = src.shape
    rows = nl.ndarray((n, d), dtype=dst.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=rows, src=src)
    flipped = nl.ndarray((d, n), dtype=dst.dtype, buffer=nl.psum)
    nisa.nc_transpose(dst=flipped, data=rows)
    nisa.tensor_copy(dst=dst, src=flipped)


def _load_keys(k, v, k0, nk, dtype):
    """Keys [k0, k0+nk) as k^T [D, nk] and values as one [<=128, D] tile per 128 keys."""
    d = k.shape[1]
    k_t = nl.ndarray((d, nk), dtype=dtype, buffer=nl.sbuf)
    v_tiles = []
    for c0, nc in tiles(nk):
        _transpose_into(k_t[:, c0:c0 + nc], k[k0 + c0:k0 + c0 + nc, :])
        vt = nl.ndarray((nc, d), dtype=dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=vt, src=v[k0 + c0:k0 + c0 + nc, :])
        v_tiles.append(vt)
    return k_t, v_tiles


def _key_source(k, v, dtype):
    """keys(k0, nk) -> (k^T, v tiles) of a key block. Keys and values of a kv head that fit
    KV_BUDGET are loaded once and shared by all query tiles and heads; otherwise per block."""
    sk, d = k.shape
    if (sk + ceil_div(sk, PMAX) * d) * dt.itemsize(dtype) > KV_BUDGET:
        return lambda k0, nk: _load_keys(k, v, k0, nk, dtype)
    k_t, v_tiles = _load_keys(k, v, 0, sk, dtype)
    return lambda k0, nk: (k_t[:, k0:k0 + nk], v_tiles[k0 // PMAX:ceil_div(k0 + nk, PMAX)])


def _fill(shape, value):
    t = nl.ndarray(shape, dtype=nl.float32, buffer=nl.sbuf)
    nisa.memset(dst=t, value=value)
    return t


def _attend_tile(q, keys, mask, out, q0, nq, causal, scale, sk):
    d, dtype = q.shape[1], q.dtype
    q_t = nl.ndarray((d, nq), dtype=dtype, buffer=nl.sbuf)
    _transpose_into(q_t, q[q0:q0 + nq, :])
    m, l, acc = _fill((nq, 1), NEG), _fill((nq, 1), 0.0), _fill((nq, d), 0.0)
    k_end = min(sk, q0 + nq) if causal else sk
    for k0, nk in tiles(k_end, KBLOCK):
        k_t, v_tiles = keys(k0, nk)
        s = _scores(q_t, k_t, scale)
        if causal and k0 + nk - 1 > q0:                        # block crosses the diagonal
            nisa.affine_select(dst=s, pattern=[[-1, nk]], channel_multiplier=1, offset=q0 - k0,
                               on_true_tile=s, on_false_value=NEG, cmp_op=nl.greater_equal)
        if mask is not None:
            mt = nl.ndarray((nq, nk), dtype=mask.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=mt, src=mask[q0:q0 + nq, k0:k0 + nk])
            nisa.tensor_tensor(dst=s, data1=s, data2=mt, op=nl.add)
        m = _online_update(s, m, l, acc, v_tiles, dtype)
    inv = nl.ndarray((nq, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.reciprocal(dst=inv, data=l)
    ot = nl.ndarray((nq, d), dtype=out.dtype, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=ot, data=acc, op0=nl.multiply, operand0=inv)
    nisa.dma_copy(dst=out[q0:q0 + nq, :], src=ot)


def _scores(q_t, k_t, scale):
    """scale * q k^T as an fp32 SBUF tile [nq, nk]."""
    nq, nk = q_t.shape[1], k_t.shape[1]
    ps = nl.ndarray((nq, nk), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_matmul(dst=ps, stationary=q_t, moving=k_t)
    s = nl.ndarray((nq, nk), dtype=nl.float32, buffer=nl.sbuf)
    nisa.activation(dst=s, op=nl.copy, data=ps, scale=scale)
    return s


def _online_update(s, m, l, acc, v_tiles, dtype):
    """Fold one score block into the running max m, sum l and output acc; returns the new max."""
    nq, nk = s.shape
    block_max = nl.ndarray((nq, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=block_max, op=nl.max, data=s, axis=1)
    m_new = nl.ndarray((nq, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=m_new, data1=m, data2=block_max, op=nl.maximum)
    neg_m = nl.ndarray((nq, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=neg_m, data=m_new, op0=nl.multiply, operand0=-1.0)
    p = nl.ndarray((nq, nk), dtype=dtype, buffer=nl.sbuf)
    rowsum = nl.ndarray((nq, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.activation(dst=p, op=nl.exp, data=s, bias=neg_m, reduce_op=nl.add, reduce_res=rowsum,
                    reduce_cmd=nisa.reduce_cmd.reset_reduce)
    alpha = nl.ndarray((nq, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.activation(dst=alpha, op=nl.exp, data=m, bias=neg_m)
    nisa.scalar_tensor_tensor(dst=l, data=l, op0=nl.multiply, operand0=alpha, op1=nl.add, operand1=rowsum)
    pv = _p_times_v(p, v_tiles)
    nisa.scalar_tensor_tensor(dst=acc, data=acc, op0=nl.multiply, operand0=alpha, op1=nl.add, operand1=pv)
    return m_new


def _p_times_v(p, v_tiles):
    """p [nq, nk] @ v, accumulated over 128-key chunks in one PSUM tile [nq, D]."""
    nq, d = p.shape[0], v_tiles[0].shape[1]
    pv = nl.ndarray((nq, d), dtype=nl.float32, buffer=nl.psum)
    for i, ((c0, nc), vt) in enumerate(zip(tiles(p.shape[1]), v_tiles)):
        p_t_psum = nl.ndarray((nc, nq), dtype=p.dtype, buffer=nl.psum)
        nisa.nc_transpose(dst=p_t_psum, data=p[:, c0:c0 + nc])
        p_t = nl.ndarray((nc, nq), dtype=p.dtype, buffer=nl.sbuf)
        nisa.tensor_copy(dst=p_t, src=p_t_psum)
        nisa.nc_matmul(dst=pv, stationary=p_t, moving=vt, accumulate=i > 0)
    return pv


def reference(q, k, v, mask=None, causal=True, scale=None):
    """fp32 numpy attention with the same layout and GQA head mapping."""
    q32, k32, v32 = (np.asarray(t, dtype=np.float32) for t in (q, k, v))
    shape = q32.shape
    q32, k32, v32 = (t.reshape((1,) * (4 - t.ndim) + t.shape) for t in (q32, k32, v32))
    group = q32.shape[1] // k32.shape[1]
    k32, v32 = np.repeat(k32, group, axis=1), np.repeat(v32, group, axis=1)
    d = q32.shape[-1]
    s = (q32 @ np.swapaxes(k32, -1, -2)) * np.float32(1.0 / math.sqrt(d) if scale is None else scale)
    if causal:
        sq, sk = s.shape[-2:]
        s = np.where(np.tril(np.ones((sq, sk), dtype=bool)), s, -np.inf)
    if mask is not None:
        s = s + np.asarray(mask, dtype=np.float32)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    o = (p / p.sum(axis=-1, keepdims=True)) @ v32
    return o.reshape(shape).astype(np.asarray(q).dtype)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """Grouped-query attention: q [1, 4, 512 * shape_scale, 128], k, v [1, 2, S, 128] (causal)."""
    rng = np.random.default_rng(seed)
    s = scaled(512, shape_scale)
    return randn(rng, (1, 4, s, 128), dtype), randn(rng, (1, 2, s, 128), dtype), randn(rng, (1, 2, s, 128), dtype)
