"""Row kernels: the last dim of the input is reduced or normalised, rows go on the partitions.

softmax / log_softmax, layer_norm, rms_norm, and reductions (sum, mean, max, min, argmax).
Statistics are kept in fp32 tiles; results are rounded to the output dtype on write.
"""
from __future__ import annotations

import numpy as np

from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.torch.kernels.common import NEG_BIG, P, coalesce, sbuf, strided

F32 = nl.float32
CHUNK = 8192       # row length kept in one tile; longer rows are processed in chunks


def plan(x, *others):
    """Views [outer..., rows, C_i] of x and others that share x's leading dims (last dims may differ)."""
    lead = tuple(x.shape[:-1])
    arrays = [x.array] + [np.broadcast_to(o.array, lead + (o.shape[-1],)) for o in others]
    cshape, cstrides = coalesce(lead, [list(a.strides[:-1]) for a in arrays])
    if len(cshape) == 1:
        cshape, cstrides = [1] + cshape, [[0] + s for s in cstrides]
    views = [strided(t, cshape + [a.shape[-1]], s + [a.strides[-1]])
             for t, a, s in zip([x] + list(others), arrays, cstrides)]
    return tuple(cshape), views


def row_blocks(lead):
    for idx in np.ndindex(*lead[:-1]) if len(lead) > 1 else [()]:
        for r0 in range(0, lead[-1], P):
            yield idx, r0, min(lead[-1], r0 + P)


def _rows(view, idx, r0, r1, c0=None, c1=None):
    key = tuple(idx) + (slice(r0, r1),) + ((slice(c0, c1),) if c0 is not None else ())
    return view.index(key)


def _load(view, idx, r0, r1, c0, c1, dtype=None, name="x"):
    t = sbuf((r1 - r0, c1 - c0), dtype or view.dtype, name=name)
    nisa.dma_copy(dst=t, src=_rows(view, idx, r0, r1, c0, c1))
    return t


def _vec(rows, name, value=None):
    t = sbuf((rows, 1), F32, name=name)
    if value is not None:
        nisa.memset(dst=t, value=value)
    return t


def _chunks(c):
    return [(c0, min(c, c0 + CHUNK)) for c0 in range(0, c, CHUNK)]


# --- softmax ----------------------------------------------------------------------------------------
def softmax(out, x, *, log: bool = False):
    lead, (vx, vo) = plan(x, out)
    c = x.shape[-1]
    chunks = _chunks(c)
    for idx, r0, r1 in row_blocks(lead):
        rows = r1 - r0
        tiles = [_load(vx, idx, r0, r1, c0, c1, name="x") for c0, c1 in chunks] if len(chunks) == 1 else None
        mx = _vec(rows, "max", NEG_BIG)
        for j, (c0, c1) in enumerate(chunks):
            t = tiles[j] if tiles else _load(vx, idx, r0, r1, c0, c1, name="x")
            part = _vec(rows, "pmax")
            nisa.tensor_reduce(dst=part, op=nl.maximum, data=t, axis=1)
            nisa.tensor_tensor(dst=mx, data1=mx, data2=part, op=nl.maximum)
        neg = _vec(rows, "negmax")
        nisa.tensor_scalar(dst=neg, data=mx, op0=nl.multiply, operand0=-1.0)
        total = _vec(rows, "sum", 0.0)
        exps = []
        for j, (c0, c1) in enumerate(chunks):
            t = tiles[j] if tiles else _load(vx, idx, r0, r1, c0, c1, name="x")
            e = sbuf((rows, c1 - c0), F32, name="exp")
            part = _vec(rows, "psum")
            nisa.activation_reduce(dst=e, op=nl.exp, data=t, bias=neg, reduce_op=nl.add, reduce_res=part)
            nisa.tensor_tensor(dst=total, data1=total, data2=part, op=nl.add)
            exps.append(e if tiles else None)
        if log:                                    # x - max - log(sum)
            shift = _vec(rows, "shift")
            nisa.activation(dst=shift, op=nl.log, data=total)
            nisa.tensor_tensor(dst=shift, data1=shift, data2=mx, op=nl.add)
        else:
            recip = _vec(rows, "recip")
            nisa.reciprocal(dst=recip, data=total)
        for j, (c0, c1) in enumerate(chunks):
            y = sbuf((rows, c1 - c0), out.dtype, name="y")
            if log:
                t = tiles[j] if tiles else _load(vx, idx, r0, r1, c0, c1, name="x")
                nisa.tensor_scalar(dst=y, data=t, op0=nl.subtract, operand0=shift)
            else:
                e = exps[j]
                if e is None:
                    t = _load(vx, idx, r0, r1, c0, c1, name="x")
                    e = sbuf((rows, c1 - c0), F32, name="exp")
                    nisa.activation(dst=e, op=nl.exp, data=t, bias=neg)
                nisa.tensor_scalar(dst=y, data=e, op0=nl.multiply, operand0=recip)
            nisa.dma_copy(dst=_rows(vo, idx, r0, r1, c0, c1), src=y)
    return out


# --- normalisations ---------------------------------------------------------------------------------
def _broadcast_rows(vec, rows, name):
    """A [C] parameter vector loaded once onto `rows` partitions (DMA broadcast)."""
    if vec is None:
        return None
    c = vec.shape[-1]
    t = sbuf((rows, c), F32, name=name)
    nisa.dma_copy(dst=t, src=vec.reshape(1, c).broadcast_to((rows, c)))
    return t


def layer_norm(out, x, weight, bias, eps: float, *, rms: bool = False):
    """LayerNorm (or RMSNorm when rms=True) over the last dim."""
    lead, (vx, vo) = plan(x, out)
    c = x.shape[-1]
    if c > 4 * CHUNK:
        raise NotImplementedError(f"layer_norm over {c} elements per row (limit {4 * CHUNK})")
    rows_max = min(P, lead[-1])
    w = _broadcast_rows(weight, rows_max, "gamma")
    b = _broadcast_rows(bias, rows_max, "beta")
    for idx, r0, r1 in row_blocks(lead):
        rows = r1 - r0
        t = _load(vx, idx, r0, r1, 0, c, name="x")
        xc = t
        if not rms:
            mean = _vec(rows, "mean")
            nisa.tensor_reduce(dst=mean, op=nl.add, data=t, axis=1)
            nisa.tensor_scalar(dst=mean, data=mean, op0=nl.multiply, operand0=1.0 / c)
            xc = sbuf((rows, c), F32, name="xc")
            nisa.tensor_scalar(dst=xc, data=t, op0=nl.subtract, operand0=mean)
        sq = sbuf((rows, c), F32, name="sq")
        var = _vec(rows, "var")
        nisa.activation_reduce(dst=sq, op=nl.square, data=xc, reduce_op=nl.add, reduce_res=var)
        rstd = _vec(rows, "rstd")
        nisa.tensor_scalar(dst=rstd, data=var, op0=nl.multiply, operand0=1.0 / c, op1=nl.add, operand1=float(eps))
        nisa.activation(dst=rstd, op=nl.rsqrt, data=rstd)
        y = sbuf((rows, c), F32 if (w is not None or b is not None) else out.dtype, name="norm")
        nisa.tensor_scalar(dst=y, data=xc, op0=nl.multiply, operand0=rstd)
        if w is not None or b is not None:
            z = sbuf((rows, c), out.dtype, name="y")
            if w is not None and b is not None:
                nisa.tensor_tensor(dst=y, data1=y, data2=w[:rows], op=nl.multiply)
                nisa.tensor_tensor(dst=z, data1=y, data2=b[:rows], op=nl.add)
            elif w is not None:
                nisa.tensor_tensor(dst=z, data1=y, data2=w[:rows], op=nl.multiply)
            else:
                nisa.tensor_tensor(dst=z, data1=y, data2=b[:rows], op=nl.add)
            y = z
        nisa.dma_copy(dst=_rows(vo, idx, r0, r1, 0, c), src=y)
    return out


# --- reductions -------------------------------------------------------------------------------------
_COMBINE = {"add": nl.add, "maximum": nl.maximum, "minimum": nl.minimum}


def reduce_last(out, x, op: str, *, scale: float = 1.0):
    """out[..., 1] = reduce(op, x[..., C]) (times scale: mean = add with scale 1/C)."""
    lead, (vx, vo) = plan(x, out)
    c = x.shape[-1]
    for idx, r0, r1 in row_blocks(lead):
        rows = r1 - r0
        acc = None
        for c0, c1 in _chunks(c):
            t = _load(vx, idx, r0, r1, c0, c1, name="x")
            part = _vec(rows, "part")
            nisa.tensor_reduce(dst=part, op=op, data=t, axis=1)
            if acc is None:
                acc = part
            else:
                nisa.tensor_tensor(dst=acc, data1=acc, data2=part, op=_COMBINE[op])
        res = sbuf((rows, 1), out.dtype, name="res")
        if scale != 1.0:
            nisa.tensor_scalar(dst=res, data=acc, op0=nl.multiply, operand0=float(scale))
        else:
            nisa.tensor_copy(dst=res, src=acc)
        nisa.dma_copy(dst=_rows(vo, idx, r0, r1, 0, 1), src=res)
    return out


def argmax_last(out, x, *, values=None, largest: bool = True):
    """out[..., 1] (int32) = first index of the max (min) along the last dim; optional values too."""
    lead, views = plan(x, out, *([values] if values is not None else []))
    vx, vo = views[0], views[1]
    vv = views[2] if values is not None else None
    c = x.shape[-1]
    red = nl.maximum if largest else nl.minimum
    better = nl.greater if largest else nl.less
    for idx, r0, r1 in row_blocks(lead):
        rows = r1 - r0
        best_v = best_i = None
        for c0, c1 in _chunks(c):
            n = c1 - c0
            t = _load(vx, idx, r0, r1, c0, c1, dtype=F32, name="x")
            cv = _vec(rows, "cmax")
            nisa.tensor_reduce(dst=cv, op=red, data=t, axis=1)
            hit = sbuf((rows, n), F32, name="hit")
            nisa.tensor_scalar(dst=hit, data=t, op0=nl.equal, operand0=cv)
            pos = sbuf((rows, n), nl.int32, name="pos")
            nisa.iota(dst=pos, pattern=[[1, n]], offset=c0 - c)         # index - C  (< 0)
            cand = sbuf((rows, n), F32, name="cand")
            nisa.tensor_tensor(dst=cand, data1=pos, data2=hit, op=nl.multiply)   # (i - C) where hit, else 0
            ci = _vec(rows, "cidx")
            nisa.tensor_reduce(dst=ci, op=nl.minimum, data=cand, axis=1)
            nisa.tensor_scalar(dst=ci, data=ci, op0=nl.add, operand0=float(c))   # first hit index
            if best_v is None:
                best_v, best_i = cv, ci
                continue
            gt = _vec(rows, "gt")
            nisa.tensor_tensor(dst=gt, data1=cv, data2=best_v, op=better)
            diff = _vec(rows, "diff")
            nisa.tensor_tensor(dst=diff, data1=ci, data2=best_i, op=nl.subtract)
            nisa.tensor_tensor(dst=diff, data1=diff, data2=gt, op=nl.multiply)
            nisa.tensor_tensor(dst=best_i, data1=best_i, data2=diff, op=nl.add)
            nisa.tensor_tensor(dst=best_v, data1=best_v, data2=cv, op=red)
        res = sbuf((rows, 1), out.dtype, name="argmax")
        nisa.tensor_copy(dst=res, src=best_i)
        nisa.dma_copy(dst=_rows(vo, idx, r0, r1, 0, 1), src=res)
        if vv is not None:
            rv = sbuf((rows, 1), values.dtype, name="maxval")
            nisa.tensor_copy(dst=rv, src=best_v)
            nisa.dma_copy(dst=_rows(vv, idx, r0, r1, 0, 1), src=rv)
    return out
