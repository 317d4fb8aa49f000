"""Flash attention: out = softmax(q k^T * scale + mask) v, one pass over K/V tiles with an online
softmax (running max and sum in fp32), so the [Sq, Skv] score matrix never leaves SBUF/PSUM.

Per 128 query rows: q^T is DMA-transposed into SBUF (stationary); for each 512-wide K/V tile the
Tensor engine computes scores into one PSUM bank, the Scalar engine scales them and takes
exp(s - max) with a fused row-sum, the Tensor engine transposes P in 128x128 blocks and multiplies
by V into PSUM, and the Vector engine rescales the fp32 accumulator. Causal tiles above the diagonal
are skipped; diagonal tiles are masked with affine_select (GpSimd). Grouped-query attention maps
query head h to K/V head h // (H / Hkv); for single-token decode the query heads of a group are
processed together as rows so each K/V tile is loaded once per group.
"""
from __future__ import annotations

import numpy as np

from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.torch.kernels.common import NEG_BIG, P, ceil_div, float_dtype_for, psum, sbuf

F32 = nl.float32
TK = 512


def flash_attention(out, q, k, v, *, scale: float, causal: bool = False, mask=None):
    """q [B,H,Sq,D], k/v [B,Hkv,Skv,D(v)], mask broadcastable to [B,H,Sq,Skv] (additive float or bool)."""
    b_, h_, sq, _ = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    group = h_ // hkv
    mask4 = mask.broadcast_to((b_, h_, sq, skv)) if mask is not None else None
    cdt = float_dtype_for(q, k, v)
    for b in range(b_):
        for hk in range(hkv):
            if sq == 1 and not causal:          # decode: the group's query heads are the rows
                h0, h1 = hk * group, (hk + 1) * group
                _attend(out.index((b, slice(h0, h1), 0)), q.index((b, slice(h0, h1), 0)), k.index((b, hk)),
                        v.index((b, hk)), mask4.index((b, slice(h0, h1), 0)) if mask4 is not None else None,
                        None, scale, cdt)
                continue
            for h in range(hk * group, (hk + 1) * group):
                for q0 in range(0, sq, P):
                    q1 = min(sq, q0 + P)
                    _attend(out.index((b, h, slice(q0, q1))), q.index((b, h, slice(q0, q1))), k.index((b, hk)),
                            v.index((b, hk)),
                            mask4.index((b, h, slice(q0, q1))) if mask4 is not None else None,
                            q0 if causal else None, scale, cdt)
    return out


def _attend(out, q, k, v, mask, causal_q0, scale, cdt):
    """out[R, Dv] = attention of R query rows q[R, D] over k[Skv, D], v[Skv, Dv]."""
    rows, d = q.shape
    skv, dv = k.shape[0], v.shape[1]
    d_chunks = [(d0, min(d, d0 + P)) for d0 in range(0, d, P)]
    q_t = []
    for d0, d1 in d_chunks:
        t = sbuf((d1 - d0, rows), cdt, name="qT")
        nisa.dma_transpose(dst=t, src=q[:, d0:d1], axes=(1, 0))
        q_t.append(t)
    m_run = sbuf((rows, 1), F32, name="m")
    nisa.memset(dst=m_run, value=NEG_BIG)
    l_run = sbuf((rows, 1), F32, name="l")
    nisa.memset(dst=l_run, value=0.0)
    o_acc = sbuf((rows, dv), F32, name="o")
    nisa.memset(dst=o_acc, value=0.0)
    kv_end = skv if causal_q0 is None else min(skv, causal_q0 + rows)
    for k0 in range(0, kv_end, TK):
        n = min(TK, kv_end - k0)
        s_ps = psum((rows, TK), name="scores")
        for j, (d0, d1) in enumerate(d_chunks):
            k_t = sbuf((d1 - d0, TK), cdt, name="kT")
            nisa.dma_transpose(dst=k_t[:, :n], src=k[k0:k0 + n, d0:d1], axes=(1, 0))
            nisa.nc_matmul(dst=s_ps[:, :n], stationary=q_t[j], moving=k_t[:, :n], accumulate=j > 0)
        s = sbuf((rows, TK), F32, name="s")
        nisa.activation(dst=s[:, :n], op=nl.copy, data=s_ps[:, :n], scale=float(scale))
        if causal_q0 is not None and k0 + n - 1 > causal_q0:       # tile crosses the diagonal
            nisa.affine_select(dst=s[:, :n], pattern=[[-1, n]], channel_multiplier=1, offset=causal_q0 - k0,
                               on_true_tile=s[:, :n], on_false_value=NEG_BIG, cmp_op=nl.greater_equal)
        if mask is not None:
            _apply_mask(s[:, :n], mask[:, k0:k0 + n], rows, n)
        m_new = _vec(rows, "mnew")
        nisa.tensor_reduce(dst=m_new, op=nl.maximum, data=s[:, :n], axis=1)
        nisa.tensor_tensor(dst=m_new, data1=m_new, data2=m_run, op=nl.maximum)
        neg_m = _vec(rows, "negm")
        nisa.tensor_scalar(dst=neg_m, data=m_new, op0=nl.multiply, operand0=-1.0)
        alpha = _vec(rows, "alpha")
        nisa.activation(dst=alpha, op=nl.exp, data=m_run, bias=neg_m)
        p = sbuf((rows, TK), cdt, name="p")
        rowsum = _vec(rows, "rowsum")
        nisa.activation_reduce(dst=p[:, :n], op=nl.exp, data=s[:, :n], bias=neg_m, reduce_op=nl.add,
                               reduce_res=rowsum)
        nisa.scalar_tensor_tensor(dst=l_run, data=l_run, op0=nl.multiply, operand0=alpha, op1=nl.add,
                                  operand1=rowsum)
        pv = psum((rows, dv), name="pv")
        for c0 in range(0, n, P):
            c = min(P, n - c0)
            pt_ps = psum((P, rows), name="pT_ps", dtype=cdt)
            nisa.nc_transpose(dst=pt_ps[:c], data=p[:, c0:c0 + c])
            pt = sbuf((P, rows), cdt, name="pT")
            nisa.tensor_copy(dst=pt[:c], src=pt_ps[:c])
            v_t = sbuf((P, dv), cdt, name="v")
            nisa.dma_copy(dst=v_t[:c], src=v[k0 + c0:k0 + c0 + c])
            nisa.nc_matmul(dst=pv, stationary=pt[:c], moving=v_t[:c], accumulate=c0 > 0)
        nisa.scalar_tensor_tensor(dst=o_acc, data=o_acc, op0=nl.multiply, operand0=alpha, op1=nl.add,
                                  operand1=pv)
        m_run = m_new
    recip = _vec(rows, "recip")
    nisa.reciprocal(dst=recip, data=l_run)
    o = sbuf((rows, dv), out.dtype, name="out")
    nisa.tensor_scalar(dst=o, data=o_acc, op0=nl.multiply, operand0=recip)
    nisa.dma_copy(dst=out, src=o)


def _apply_mask(s, mask, rows, n):
    mt = sbuf((rows, n), F32, name="mask")
    nisa.dma_copy(dst=mt, src=mask)
    if not (mask.dtype.kind == "f" or str(mask.dtype) == "bfloat16"):
        # boolean mask (1 = attend): (m - 1) * 3e38 -> 0 or -3e38
        nisa.tensor_scalar(dst=mt, data=mt, op0=nl.subtract, operand0=1.0, op1=nl.multiply, operand1=-NEG_BIG)
    else:
        nisa.tensor_scalar(dst=mt, data=mt, op0=nl.maximum, operand0=NEG_BIG)   # -inf -> -3e38
    nisa.tensor_tensor(dst=s, data1=s, data2=mt, op=nl.add)


def _vec(rows, name):
    return sbuf((rows, 1), F32, name=name)


__all__ = ["flash_attention", "np", "ceil_div"]
