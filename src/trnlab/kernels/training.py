"""Kernels of training graphs: constant fills, scatter-add of rows (embedding gradient), and the
negative log-likelihood loss with its gradient (cross-entropy = log_softmax + nll_loss).

Model-path entries on existing HBM views: fill, gather_dim0, nll_loss, nll_loss_backward (the
scatter-add of rows is gather.scatter_rows(accumulate=True)).
Public kernel (@nki.jit): nll(logp, target) -> mean NLL of logp [N, C] at int32 targets [N].

The class of each row is picked without indexing by value: an iota of column numbers is compared with
the row's target (a per-partition scalar), giving a one-hot row that masks the log-probabilities
(forward) or places the gradient (backward). Class numbers are compared in fp32: exact below 2**24.
Row sums across partitions (the loss and the count of non-ignored rows) are one matmul with a ones
vector on the Tensor engine, accumulated in PSUM.
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.kernels._common import P, TilePlan, psum, sbuf
from trnlab.kernels._examples import randn
from trnlab.kernels.gather import gather_rows

F32 = nl.float32
CHUNK = 4096        # classes per tile


@nki.jit
def nll(logp, target):
    out = nl.ndarray((1,), dtype=logp.dtype, buffer=nl.shared_hbm)
    total = nl.ndarray((1,), dtype=logp.dtype, buffer=nl.shared_hbm)
    nll_loss(out, total, logp, target, reduction="mean", ignore_index=-100)
    return out


def fill(out, value: float):
    """out[...] = value (one memset tile per distinct tile shape, stored by DMA)."""
    tiles = {}
    for (vo,) in TilePlan(out, []):
        shape = tuple(vo.shape)
        if shape not in tiles:
            tiles[shape] = sbuf(shape, out.dtype, name="fill")
            nisa.memset(dst=tiles[shape], value=float(value))
        nisa.dma_copy(dst=vo, src=tiles[shape])
    return out


def gather_dim0(out, x, index):
    """out[j, r...] = x[index[j, r...], r...] (torch.gather along dim 0 of views permuted so): one
    gather_rows per position r of the other dims."""
    n, t = index.shape[0], x.shape[0]
    for r in np.ndindex(*index.shape[1:]):
        key = (slice(None),) + r
        gather_rows(out.index(key).reshape(n, 1), x.index(key).reshape(t, 1), index.index(key))
    return out


def _targets(target, r0, r1, ignore_index):
    """(target as fp32 [rows, 1], 1.0 where target != ignore_index else 0.0 [rows, 1])."""
    rows = r1 - r0
    t = sbuf((rows, 1), F32, name="target")
    nisa.dma_copy(dst=t, src=target[r0:r1].reshape(rows, 1))
    valid = sbuf((rows, 1), F32, name="valid")
    nisa.tensor_scalar(dst=valid, data=t, op0=nl.not_equal, operand0=float(ignore_index))
    return t, valid


def _onehot(t, rows, c0, c1):
    """[rows, c1 - c0] fp32: 1.0 where the column number equals the row's target."""
    n = c1 - c0
    pos = sbuf((rows, n), F32, name="cls")
    nisa.iota(dst=pos, pattern=[[1, n]], offset=c0)
    hit = sbuf((rows, n), F32, name="onehot")
    nisa.tensor_scalar(dst=hit, data=pos, op0=nl.equal, operand0=t)
    return hit


def nll_loss(out, total_weight, logp, target, *, reduction: str, ignore_index: int):
    """out = -logp[i, target[i]] per row ('none', [N]) or summed / averaged over the non-ignored rows
    ('sum' / 'mean', [1]); total_weight [1] = the number of non-ignored rows."""
    n, c = logp.shape
    acc = psum((1, 2), name="sums")
    for b, r0 in enumerate(range(0, n, P)):
        r1 = min(n, r0 + P)
        rows = r1 - r0
        t, valid = _targets(target, r0, r1, ignore_index)
        picked = sbuf((rows, 1), F32, name="picked")
        nisa.memset(dst=picked, value=0.0)
        for c0 in range(0, c, CHUNK):
            c1 = min(c, c0 + CHUNK)
            x = sbuf((rows, c1 - c0), F32, name="logp")
            nisa.dma_copy(dst=x, src=logp[r0:r1, c0:c1])
            hit = _onehot(t, rows, c0, c1)
            nisa.tensor_tensor(dst=hit, data1=hit, data2=x, op=nl.multiply)
            part = sbuf((rows, 1), F32, name="part")
            nisa.tensor_reduce(dst=part, op=nl.add, data=hit, axis=1)
            nisa.tensor_tensor(dst=picked, data1=picked, data2=part, op=nl.add)
        pair = sbuf((rows, 2), F32, name="pair")              # [-logp[target] * valid, valid]
        nisa.scalar_tensor_tensor(dst=pair[:, 0:1], data=picked, op0=nl.multiply, operand0=-1.0,
                                  op1=nl.multiply, operand1=valid)
        nisa.tensor_copy(dst=pair[:, 1:2], src=valid)
        if reduction == "none":
            res = sbuf((rows, 1), out.dtype, name="loss")
            nisa.tensor_copy(dst=res, src=pair[:, 0:1])
            nisa.dma_copy(dst=out[r0:r1].reshape(rows, 1), src=res)
        ones = sbuf((rows, 1), F32, name="ones")
        nisa.memset(dst=ones, value=1.0)
        nisa.nc_matmul(dst=acc, stationary=ones, moving=pair, accumulate=b > 0)
    sums = sbuf((1, 2), F32, name="sums")
    nisa.tensor_copy(dst=sums, src=acc)
    tw = sbuf((1, 1), total_weight.dtype, name="total_weight")
    nisa.tensor_copy(dst=tw, src=sums[:, 1:2])
    nisa.dma_copy(dst=total_weight.reshape(1, 1), src=tw)
    if reduction != "none":
        res = sbuf((1, 1), out.dtype, name="loss")
        if reduction == "mean":
            inv = sbuf((1, 1), F32, name="inv_count")
            nisa.reciprocal(dst=inv, data=sums[:, 1:2])
            nisa.tensor_tensor(dst=res, data1=sums[:, 0:1], data2=inv, op=nl.multiply)
        else:
            nisa.tensor_copy(dst=res, src=sums[:, 0:1])
        nisa.dma_copy(dst=out.reshape(1, 1), src=res)
    return out


def nll_loss_backward(grad_input, grad_output, target, total_weight, *, reduction: str, ignore_index: int):
    """grad_input[i, c] = -g_i where c == target[i] != ignore_index, else 0; g_i = grad_output[i]
    ('none'), grad_output ('sum') or grad_output / total_weight ('mean')."""
    n, c = grad_input.shape
    for r0 in range(0, n, P):
        r1 = min(n, r0 + P)
        rows = r1 - r0
        t, valid = _targets(target, r0, r1, ignore_index)
        g = sbuf((rows, 1), F32, name="grad_out")
        src = grad_output[r0:r1] if reduction == "none" else grad_output.reshape(1).broadcast_to((rows,))
        nisa.dma_copy(dst=g, src=src.reshape(rows, 1))
        scale = sbuf((rows, 1), F32, name="scale")             # -g * valid (/ total_weight)
        nisa.scalar_tensor_tensor(dst=scale, data=g, op0=nl.multiply, operand0=-1.0, op1=nl.multiply,
                                  operand1=valid)
        if reduction == "mean":
            w = sbuf((rows, 1), F32, name="total_weight")
            nisa.dma_copy(dst=w, src=total_weight.reshape(1).broadcast_to((rows,)).reshape(rows, 1))
            nisa.tensor_tensor(dst=scale, data1=scale, data2=w, op=nl.divide)
        for c0 in range(0, c, CHUNK):
            c1 = min(c, c0 + CHUNK)
            hit = _onehot(t, rows, c0, c1)
            y = sbuf((rows, c1 - c0), grad_input.dtype, name="grad_in")
            nisa.tensor_scalar(dst=y, data=hit, op0=nl.multiply, operand0=scale)
            nisa.dma_copy(dst=grad_input[r0:r1, c0:c1], src=y)
    return grad_input


def reference(logp, target):
    logp, target = np.asarray(logp, dtype=np.float32), np.asarray(target)
    return np.asarray([-logp[np.arange(len(target)), target].mean()], dtype=np.float32)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """Log-probabilities [256, 1000] and int32 class targets [256]."""
    rng = np.random.default_rng(seed)
    n = max(1, int(256 * shape_scale))
    x = randn(rng, (n, 1000), np.float32)
    logp = (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(dtype)
    return logp, rng.integers(0, 1000, size=n).astype(np.int32)
