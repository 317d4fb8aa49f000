"""Lowerings of the ops training graphs add (AOTAutograd forward/backward graphs, see trnlab.torch.train):
full_like, constant_pad_nd, slice_scatter, index_put, gather, the embedding gradient (a scatter-add of
rows), the negative log-likelihood loss and its gradient, any, detach (native_layer_norm's mean and
rstd outputs, which training saves, are computed by its lowering in lowering.py). Ops without tensor inputs (full, scalar_tensor, arange, zeros) never run on the device: they
are constants, folded at compile time and placed in HBM like weights.

Registered in the one registry of trnlab.torch.lowering (this module is imported at its end). Ops
listed in TRAINING_PRESERVED are also kept whole by the inference capture (their PyTorch
decompositions compare int64 class ids / token ids, which the device refuses; these lowerings only
index with them).
"""
from __future__ import annotations

import torch

from trnlab.kernels import elementwise as ew, gather, training as tk
from trnlab.kernels._common import dma_copy_split
from trnlab.core import dtypes as dt
from trnlab.torch.lowering import (INDEX, LOWERINGS, PRESERVED, _reduction, contiguous_copy, is_dev, lowers,
                                   reshape)

aten = torch.ops.aten

REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}        # at::Reduction


# --- constants and views --------------------------------------------------------------------------
# detach is alias on the device (no autograd there); one registration, so torch.export's rewrite of
# detach into alias and AOTAutograd's detach run the same lowering.
LOWERINGS[aten.detach] = LOWERINGS[aten.alias]


def _fill_refusal(node, x, value, *_, **__):
    return _fill_refusal_value(node, value)


@lowers(aten.full_like, dtypes=INDEX, supports=_fill_refusal)
def _full_like(ctx, node, x, value, *_, **__):
    return tk.fill(ctx.out(node), float(value))


# --- copies into slices / rows ----------------------------------------------------------------------
def _writable_copy(ctx, node, x):
    """A fresh copy of x to write into (x may be a view other nodes still read)."""
    return contiguous_copy(ctx, x)


@lowers(aten.slice_scatter, dtypes=INDEX)
def _slice_scatter(ctx, node, x, src, dim=0, start=None, end=None, step=1):
    out = _writable_copy(ctx, node, x)
    dim %= x.ndim
    n = x.shape[dim]
    start = 0 if start is None else (start + n if start < 0 else start)
    end = n if end is None else (end + n if end < 0 else end)
    start, end = max(0, min(n, start)), max(0, min(n, end))
    view = out.index((slice(None),) * dim + (slice(start, max(start, end), step),))
    if view.size:
        dma_copy_split(view, src.broadcast_to(tuple(view.shape)))
    return out


def _pad_refusal(node, x, pad, value=0.0):
    if any(p < 0 for p in pad):
        return f"constant_pad_nd with negative pads {list(pad)} (cropping is not lowered)"
    return _fill_refusal_value(node, value)


def _fill_refusal_value(node, value):
    if node.meta["val"].dtype == torch.int64 and not -2**31 <= float(value) < 2**31:
        return f"{node.target} with the value {value}, beyond the int32 the device holds int64 in"
    return None


@lowers(aten.constant_pad_nd, dtypes=INDEX, supports=_pad_refusal)
def _constant_pad(ctx, node, x, pad, value=0.0):
    """out = value everywhere, then x copied into the interior (pads are (before, after) pairs from
    the last dim backwards, as F.pad takes them)."""
    out = tk.fill(ctx.out(node), float(value))
    key = [slice(None)] * x.ndim
    for i in range(len(pad) // 2):
        d = x.ndim - 1 - i
        key[d] = slice(pad[2 * i], pad[2 * i] + x.shape[d])
    if x.size:
        dma_copy_split(out.index(tuple(key)), x)
    return out


def _index_put_refusal(node, x, indices, values, accumulate=False):
    if len(indices) != 1 or indices[0] is None:
        return f"index_put with {len(indices)} index tensors (only one index tensor on dim 0 is lowered)"
    idx = indices[0]
    if idx.dtype == torch.bool:
        return "index_put with a boolean mask index (only integer indices on dim 0 are lowered)"
    if idx.ndim != 1:
        return f"index_put with a {idx.ndim}-D index (only a 1-D index on dim 0 is lowered)"
    if x.dtype == torch.int64 and accumulate:
        return "index_put(accumulate=True) on int64 values (int64 arithmetic is refused)"
    return None


@lowers(aten.index_put, dtypes=INDEX, supports=_index_put_refusal)
def _index_put(ctx, node, x, indices, values, accumulate=False):
    """x[index] = values (or += with accumulate: repeated indices add up), a copy of x written by an
    indirect DMA scatter."""
    out = _writable_copy(ctx, node, x)
    index = indices[0]
    rows = (index.shape[0],) + tuple(x.shape[1:])
    src = values.broadcast_to(rows) if is_dev(values) else _const(ctx, values, rows, out.dtype)
    gather.scatter_rows(out, src, index, accumulate=bool(accumulate))
    return out


def _gather_refusal(node, x, dim, index, sparse_grad=False):
    if index.ndim != x.ndim:
        return f"gather with a {index.ndim}-D index of a {x.ndim}-D input"
    return None


@lowers(aten.gather, dtypes=INDEX, supports=_gather_refusal)
def _gather(ctx, node, x, dim, index, sparse_grad=False):
    out = ctx.out(node)
    dim %= max(1, x.ndim)
    if x.ndim == 0:
        dma_copy_split(out, x)
        return out
    order = (dim,) + tuple(i for i in range(x.ndim) if i != dim)
    ip = index.permute(order)
    xp = x.permute(order).index((slice(None),) + tuple(slice(0, n) for n in ip.shape[1:]))
    tk.gather_dim0(out.permute(order), xp, ip)
    return out


def _const(ctx, value, shape, dtype):
    return tk.fill(ctx.alloc(shape, dtype), float(value))


def _embedding_backward_refusal(node, grad, indices, num_weights, padding_idx, scale_grad_by_freq):
    if scale_grad_by_freq:
        return "embedding backward with scale_grad_by_freq=True (only the plain sum of rows is lowered)"
    return None


@lowers(aten.embedding_dense_backward, dtypes=INDEX, supports=_embedding_backward_refusal)
def _embedding_backward(ctx, node, grad, indices, num_weights, padding_idx, scale_grad_by_freq):
    """grad_weight[v] = sum of grad rows whose index is v: zeros, then a scatter-add of the rows
    (accumulated in fp32; the padding row keeps a zero gradient, as PyTorch's)."""
    out = ctx.out(node)
    d = out.shape[1]
    acc = out if out.dtype == dt.float32 else ctx.alloc(out.shape, dt.float32)
    tk.fill(acc, 0.0)
    flat_idx = reshape(ctx, indices, (indices.size,))
    gather.scatter_rows(acc, reshape(ctx, grad, (grad.size // d, d)), flat_idx, accumulate=True)
    if padding_idx is not None and 0 <= padding_idx < out.shape[0]:
        tk.fill(acc.index((slice(padding_idx, padding_idx + 1),)), 0.0)
    if acc is not out:
        dma_copy_split(out, acc)
    return out


# --- loss ---------------------------------------------------------------------------------------------
def _nll_refusal(node, x, target, weight=None, reduction=1, ignore_index=-100, *_):
    if weight is not None:
        return "nll_loss with class weights (only weight=None is lowered)"
    if x.ndim not in (1, 2):
        return f"nll_loss on a {x.ndim}-D input (only [N, C] or [C] are lowered)"
    if not x.is_floating_point():
        return f"nll_loss on {x.dtype} log-probabilities"
    if reduction not in REDUCTIONS:
        return f"nll_loss with reduction={reduction}"
    return None


def _rows2(x, target):
    """[N, C] log-probabilities and [N] targets (a single [C] row and 0-d target become N = 1)."""
    if x.ndim == 1:
        return x.reshape(1, x.shape[0]), target.reshape(1)
    return x, target


@lowers(aten.nll_loss_forward, dtypes=INDEX, supports=_nll_refusal)
def _nll_loss_forward(ctx, node, x, target, weight, reduction, ignore_index):
    out, total = ctx.out_at(node, 0), ctx.out_at(node, 1)
    x2, t2 = _rows2(x, target)
    loss = out.reshape(out.size) if out.ndim else out.reshape(1)
    tk.nll_loss(loss, total.reshape(1), x2, t2, reduction=REDUCTIONS[reduction], ignore_index=int(ignore_index))
    return out, total


def _nll_backward_refusal(node, grad_out, x, target, weight, reduction, ignore_index, total_weight):
    return _nll_refusal(node, x, target, weight, reduction, ignore_index)


@lowers(aten.nll_loss_backward, dtypes=INDEX, supports=_nll_backward_refusal)
def _nll_loss_backward(ctx, node, grad_out, x, target, weight, reduction, ignore_index, total_weight):
    out = ctx.out(node)
    o2, t2 = _rows2(out, target)
    g = grad_out.reshape(max(1, grad_out.size))
    tk.nll_loss_backward(o2, g, t2, total_weight.reshape(1), reduction=REDUCTIONS[reduction],
                         ignore_index=int(ignore_index))
    return out


# --- reductions -----------------------------------------------------------------------------------
@lowers(aten.any, dtypes=INDEX)
def _any(ctx, node, x, dims=None, keepdim=False):
    """any = max over the dims of (x != 0)."""
    nonzero = ctx.alloc(tuple(x.shape), dt.uint8)
    ew.scalar_op(nonzero, x, "not_equal", 0.0)
    return _reduction("maximum")(ctx, node, nonzero, dims, keepdim)


# Kept whole by the inference capture too (see the module docstring).
TRAINING_PRESERVED = [aten.nll_loss_forward.default, aten.nll_loss_backward.default,
                      aten.embedding_dense_backward.default]
PRESERVED.extend(op for op in TRAINING_PRESERVED if op not in PRESERVED)

__all__ = ["TRAINING_PRESERVED", "REDUCTIONS"]
