"""Elementwise kernels with numpy-style broadcasting: unary activations, binary ALU ops, where.

The output and its operands are viewed as [outer..., rows, cols] (adjacent dims merged); rows go on
the partitions in chunks of 128, cols are the free dim. An operand broadcast along cols is loaded as
a [rows, 1] vector and applied with tensor_scalar; other broadcasts are expanded by the DMA.
"""
from __future__ import annotations

from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.torch.kernels.common import NEG_BIG, row_plan, row_tiles, sbuf, tile_of

F32 = nl.float32


def _col_broadcast(view) -> bool:
    return view.array.strides[-1] == 0 and view.shape[-1] > 1


def _load(view, idx, r0, r1, c0, c1, name):
    rows, cols = r1 - r0, c1 - c0
    if _col_broadcast(view):
        t = sbuf((rows, 1), view.dtype if view.dtype != nl.bool_ else nl.uint8, name=name)
        nisa.dma_copy(dst=t, src=view.index(tuple(idx) + (slice(r0, r1), slice(c0, c0 + 1))))
        return t, True
    t = sbuf((rows, cols), view.dtype, name=name)
    nisa.dma_copy(dst=t, src=tile_of(view, idx, r0, r1, c0, c1))
    return t, False


def unary(out, x, func: str, *, scale=1.0, bias=None):
    """out = func(x * scale + bias) on the Scalar engine (one instruction per tile)."""
    shape, (vo, vx) = row_plan(out, [x])
    for idx, r0, r1, c0, c1 in row_tiles(shape):
        t = _full(vx, idx, r0, r1, c0, c1, "x")
        y = sbuf((r1 - r0, c1 - c0), out.dtype, name="y")
        if func == "reciprocal":
            nisa.reciprocal(dst=y, data=t)
        else:
            b = None
            if bias is not None:
                b = sbuf((r1 - r0, 1), F32, name="bias")
                nisa.memset(dst=b, value=float(bias))
            nisa.activation(dst=y, op=func, data=t, scale=scale, bias=b)
        nisa.dma_copy(dst=tile_of(vo, idx, r0, r1, c0, c1), src=y)
    return out


def scalar_op(out, x, op: str, scalar, *, reverse=False, op1=None, scalar1=None):
    """out = (x op scalar) [op1 scalar1]; reverse computes scalar op x."""
    shape, (vo, vx) = row_plan(out, [x])
    for idx, r0, r1, c0, c1 in row_tiles(shape):
        t = sbuf((r1 - r0, c1 - c0), vx.dtype, name="x")
        nisa.dma_copy(dst=t, src=tile_of(vx, idx, r0, r1, c0, c1))
        y = sbuf((r1 - r0, c1 - c0), out.dtype, name="y")
        nisa.tensor_scalar(dst=y, data=t, op0=op, operand0=scalar, reverse0=reverse, op1=op1, operand1=scalar1)
        nisa.dma_copy(dst=tile_of(vo, idx, r0, r1, c0, c1), src=y)
    return out


def binary(out, a, b, op: str, *, alpha=None):
    """out = a op b (or a + alpha * b) with broadcasting."""
    shape, (vo, va, vb) = row_plan(out, [a, b])
    for idx, r0, r1, c0, c1 in row_tiles(shape):
        rows, cols = r1 - r0, c1 - c0
        ta, a_vec = _load(va, idx, r0, r1, c0, c1, "a")
        tb, b_vec = _load(vb, idx, r0, r1, c0, c1, "b")
        if a_vec and b_vec:                    # both broadcast along cols: expand one of them
            ta = sbuf((rows, cols), va.dtype, name="a")
            nisa.dma_copy(dst=ta, src=tile_of(va, idx, r0, r1, c0, c1))
            a_vec = False
        y = sbuf((rows, cols), out.dtype, name="y")
        if alpha is not None and alpha != 1:      # a op (alpha * b)
            ta = _full(va, idx, r0, r1, c0, c1, "a") if a_vec else ta
            tb = _full(vb, idx, r0, r1, c0, c1, "b") if b_vec else tb
            nisa.scalar_tensor_tensor(dst=y, data=tb, op0=nl.multiply, operand0=float(alpha),
                                      op1=op, operand1=ta, reverse1=True)
        elif b_vec:
            nisa.tensor_scalar(dst=y, data=ta, op0=op, operand0=tb)
        elif a_vec:
            nisa.tensor_scalar(dst=y, data=tb, op0=op, operand0=ta, reverse0=True)
        else:
            nisa.tensor_tensor(dst=y, data1=ta, data2=tb, op=op)
        nisa.dma_copy(dst=tile_of(vo, idx, r0, r1, c0, c1), src=y)
    return out


def where(out, cond, a, b):
    """out = cond ? a : b with a, b tensors or scalars: b + cond * (a - b), fp32 on the Vector engine.

    The ISA here has no select ALU op, so infinite scalars are clamped to +-3e38 (softmax-neutral)."""
    operands = [cond] + [t for t in (a, b) if not _is_scalar(t)]
    shape, views = row_plan(out, operands)
    vo, vc, rest = views[0], views[1], list(views[2:])
    va = rest.pop(0) if not _is_scalar(a) else None
    vb = rest.pop(0) if not _is_scalar(b) else None
    for idx, r0, r1, c0, c1 in row_tiles(shape):
        rows, cols = r1 - r0, c1 - c0
        c = _full(vc, idx, r0, r1, c0, c1, "cond")
        ta = _full(va, idx, r0, r1, c0, c1, "a") if va is not None else _finite(a)
        tb = _full(vb, idx, r0, r1, c0, c1, "b") if vb is not None else _finite(b)
        diff = sbuf((rows, cols), F32, name="diff")
        y = sbuf((rows, cols), out.dtype, name="y")
        if va is None and vb is None:          # both scalars: y = c * (a - b) + b
            nisa.tensor_scalar(dst=y, data=c, op0=nl.multiply, operand0=ta - tb, op1=nl.add, operand1=tb)
        elif va is None:                        # y = (c * (b - a) ...) -> b + c*(a-b) = (a - b) * c + b
            nisa.tensor_scalar(dst=diff, data=tb, op0=nl.subtract, operand0=ta, reverse0=True)
            nisa.tensor_tensor(dst=diff, data1=diff, data2=c, op=nl.multiply)
            nisa.tensor_tensor(dst=y, data1=diff, data2=tb, op=nl.add)
        elif vb is None:
            nisa.tensor_scalar(dst=diff, data=ta, op0=nl.subtract, operand0=tb)
            nisa.tensor_tensor(dst=diff, data1=diff, data2=c, op=nl.multiply)
            nisa.tensor_scalar(dst=y, data=diff, op0=nl.add, operand0=tb)
        else:
            nisa.tensor_tensor(dst=diff, data1=ta, data2=tb, op=nl.subtract)
            nisa.tensor_tensor(dst=diff, data1=diff, data2=c, op=nl.multiply)
            nisa.tensor_tensor(dst=y, data1=diff, data2=tb, op=nl.add)
        nisa.dma_copy(dst=tile_of(vo, idx, r0, r1, c0, c1), src=y)
    return out


def _is_scalar(x) -> bool:
    return isinstance(x, (int, float, bool))


def _finite(x) -> float:
    x = float(x)
    if x != x:
        return 0.0
    return max(NEG_BIG, min(-NEG_BIG, x))


def _full(view, idx, r0, r1, c0, c1, name):
    t = sbuf((r1 - r0, c1 - c0), F32 if view.dtype in (nl.bool_, nl.uint8) else view.dtype, name=name)
    nisa.dma_copy(dst=t, src=tile_of(view, idx, r0, r1, c0, c1))
    return t
