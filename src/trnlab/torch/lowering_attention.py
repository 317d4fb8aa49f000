"""Lowerings of the attention ops a training capture (AOTAutograd) keeps whole on CPU:

- aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal, *, attn_mask, scale)
  -> (out, logsumexp): kernels.flash_attention with its logsumexp output (written only when a user
  reads it, e.g. the backward graph);
- aten._scaled_dot_product_flash_attention_for_cpu_backward(grad_out, q, k, v, out, logsumexp,
  dropout_p, is_causal, *, attn_mask, scale) -> (grad_q, grad_k, grad_v): kernels.flash_attention_bwd.

Layouts [B, H, S, D]; logsumexp [B, H, Sq] fp32. Grouped-query k/v (Hq a multiple of Hkv, query head
h reading kv head h // (Hq / Hkv)) are taken as they are, as PyTorch's CPU kernels do (F.sdpa with
enable_gqa=True captures un-expanded k/v). The captured mask is additive and of q's dtype (PyTorch
turns bool masks into 0 / -inf before these ops).

Importing this module registers the ops with trnlab.torch.lowering and keeps the forward op whole
in inference captures (torch.export would otherwise decompose it into matmuls and a softmax).
"""
from __future__ import annotations

import math
import operator

import torch

from trnlab.kernels.flash_attention import flash_attention_into
from trnlab.kernels.flash_attention_bwd import MAX_D, flash_attention_bwd_into
from trnlab.torch.lowering import FLOATS, PRESERVED, lowers

aten = torch.ops.aten

FLASH = aten._scaled_dot_product_flash_attention_for_cpu
FLASH_BWD = aten._scaled_dot_product_flash_attention_for_cpu_backward


def _refusal(name, q, k, v, dropout_p, attn_mask, max_d=None) -> str | None:
    if dropout_p:
        return f"{name} with dropout_p={dropout_p} (random masks are not simulated)"
    if not q.ndim == k.ndim == v.ndim == 4:
        return f"{name} on rank-{q.ndim}/{k.ndim}/{v.ndim} q/k/v (only [B, H, S, D] is lowered)"
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        return f"{name} with {q.shape[1]} query heads and {k.shape[1]} kv heads (Hq must be a multiple of Hkv)"
    if max_d is not None and max(q.shape[-1], v.shape[-1]) > max_d:
        return f"{name} with head dims {q.shape[-1]}/{v.shape[-1]} (the backward kernel takes D, Dv <= {max_d})"
    if attn_mask is not None:
        full = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        try:
            ok = torch.broadcast_shapes(tuple(attn_mask.shape), full) == full
        except RuntimeError:
            ok = False
        if not ok:
            return f"{name} with attn_mask {list(attn_mask.shape)} not broadcastable to [B, H, Sq, Sk] = {list(full)}"
    return None


def _scale(q, scale) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _used(node, i) -> bool:
    return any(u.target is operator.getitem and u.args[1] == i for u in node.users)


@lowers(FLASH, dtypes=FLOATS,
        supports=lambda node, q, k, v, dropout_p=0.0, is_causal=False, *, attn_mask=None, scale=None:
        _refusal("flash attention", q, k, v, dropout_p, attn_mask))
def _flash(ctx, node, q, k, v, dropout_p=0.0, is_causal=False, *, attn_mask=None, scale=None):
    out = ctx.out_at(node, 0)
    lse = ctx.out_at(node, 1) if _used(node, 1) else None
    flash_attention_into(out, q, k, v, scale=_scale(q, scale), causal=bool(is_causal), mask=attn_mask, lse=lse)
    return out, lse


@lowers(FLASH_BWD, dtypes=FLOATS,
        supports=lambda node, g, q, k, v, out, lse, dropout_p, is_causal, *, attn_mask=None, scale=None:
        _refusal("flash attention backward", q, k, v, dropout_p, attn_mask, MAX_D))
def _flash_bwd(ctx, node, grad_out, q, k, v, out, lse, dropout_p, is_causal, *, attn_mask=None, scale=None):
    dq, dk, dv = (ctx.out_at(node, i) for i in range(3))
    flash_attention_bwd_into(dq, dk, dv, q, k, v, out, grad_out, lse, scale=_scale(q, scale),
                             causal=bool(is_causal), mask=attn_mask)
    return dq, dk, dv


if FLASH.default not in PRESERVED:
    PRESERVED.append(FLASH.default)
