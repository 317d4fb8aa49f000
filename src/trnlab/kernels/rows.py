"""Row reductions over the last dim (sum, mean, max, min, argmax), rows on the partitions.

Model-path entries on HBM views [..., C] (any leading dims and strides): reduce_last, argmax_last.
(Row normalisations live in softmax.py, rmsnorm.py and layernorm.py.)
Statistics are kept in fp32 tiles; results are rounded to the output dtype on write.
"""
from __future__ import annotations


from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.kernels._common import row_blocks, row_plan, sbuf

F32 = nl.float32
CHUNK = 8192       # row length kept in one tile; longer rows are processed in chunks
plan = row_plan     # the name the reductions below use


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
