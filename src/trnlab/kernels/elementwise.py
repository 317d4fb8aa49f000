"""Elementwise kernels with numpy-style broadcasting: unary activations, binary ALU ops, where.

The output and its operands are walked tile by tile (see common.TilePlan: one dim on the 128
partitions, the innermost dims in the free dims). An operand that repeats along the free dims is
loaded as a [rows, 1] vector and applied with tensor_scalar; other broadcasts are expanded by the
DMA. Tiles of the last few iterations stay allocated so loads run ahead of compute (multi-buffering).

Public kernel (@nki.jit): elementwise(a, b, op="multiply") -> a op b broadcast numpy-style, in a.dtype.
Model-path entries on existing HBM views: unary, scalar_op, binary, bitwise, where.
"""
from __future__ import annotations

import numpy as np

import trnlab.nki as nki
from collections import deque

from trnlab.core import dtypes as dt
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.kernels._examples import randn, scaled
from trnlab.kernels._common import COLS, P, TilePlan, free_broadcast, row_blocks, row_plan, sbuf

F32 = nl.float32
BUDGET = 96 * 1024  # SBUF bytes per partition for tiles in flight: loads run ahead of compute


@nki.jit
def elementwise(a, b, op="multiply"):
    out = nl.ndarray(np.broadcast_shapes(tuple(a.shape), tuple(b.shape)), dtype=a.dtype, buffer=nl.shared_hbm)
    return binary(out, a, b, op)


def _depth(plan, n_tiles: int, itemsize: int = 4) -> int:
    """Iterations whose tiles stay live (enough DMAs in flight to keep the 16 queues busy)."""
    per_iter = n_tiles * plan.tile_elems * itemsize
    return max(2, min(8, BUDGET // max(1, per_iter)))


def _load(view, name, dtype=None):
    dtype = dtype or _load_dtype(view.dtype)
    if free_broadcast(view):
        return _expand(_load_vec(view, name), view.shape, dtype, name)
    t = sbuf(view.shape, dtype, name=name)
    nisa.dma_copy(dst=t, src=view)
    return t


def _expand(vec, shape, dtype, name):
    """A tile whose rows repeat one value each, from the [rows, 1] vector: a DMA from a stride-0 HBM
    view would move one element per descriptor, the Vector engine fills it at its full rate.
    1 * v reproduces v exactly (signed zeros, inf and NaN included)."""
    t = sbuf(shape, dtype, name=name)
    nisa.memset(dst=t, value=1.0)
    nisa.tensor_scalar(dst=t, data=t, op0="multiply", operand0=vec)
    return t


def _load_vec(view, name):
    """A free-broadcast operand as one value per partition [rows, 1]."""
    col = view.index((slice(None),) + (0,) * (view.ndim - 1)).reshape(view.shape[0], 1)
    return _load(col, name)


def _store(view, tile):
    nisa.dma_copy(dst=view, src=tile)


def unary(out, x, func: str, *, scale=1.0):
    """out = func(x * scale) on the Scalar engine (Vector reciprocal for 1/x)."""
    plan = TilePlan(out, [x])
    keep = deque(maxlen=_depth(plan, 2))
    for vo, vx in plan:
        t = _load(vx, "x")
        y = sbuf(vo.shape, out.dtype, name="y")
        if func == "reciprocal":
            nisa.reciprocal(dst=y, data=t)
        else:
            nisa.activation(dst=y, op=func, data=t, scale=scale)
        _store(vo, y)
        keep.append((t, y))
    return out


def scalar_op(out, x, op: str, scalar, *, reverse=False, op1=None, scalar1=None):
    """out = (x op scalar) [op1 scalar1]; reverse computes scalar op x."""
    plan = TilePlan(out, [x])
    keep = deque(maxlen=_depth(plan, 2))
    for vo, vx in plan:
        t = _load(vx, "x")
        y = sbuf(vo.shape, out.dtype, name="y")
        nisa.tensor_scalar(dst=y, data=t, op0=op, operand0=scalar, reverse0=reverse, op1=op1, operand1=scalar1)
        _store(vo, y)
        keep.append((t, y))
    return out


def binary(out, a, b, op: str, *, alpha=None, act_a=None):
    """out = a op b, or a op (alpha * b), or act_a(a) op b (fused: act(a) never goes to HBM)."""
    scaled = alpha is not None and alpha != 1
    plan = TilePlan(out, [a, b])
    keep = deque(maxlen=_depth(plan, 4) * (2 if act_a else 1))
    for vo, va, vb in plan:
        a_vec, b_vec = free_broadcast(va) and not scaled, free_broadcast(vb) and not scaled
        a_vec = a_vec and act_a is None
        if a_vec and b_vec:
            a_vec = False
        ta = _load_vec(va, "a") if a_vec else _load(va, "a")
        tb = _load_vec(vb, "b") if b_vec else _load(vb, "b")
        if act_a is not None:                   # rounded to the output dtype, as the unfused op would store it
            t_act = sbuf(ta.shape, out.dtype, name="act")
            nisa.activation(dst=t_act, op=act_a, data=ta)
            keep.append(t_act)
            ta = t_act
        y = sbuf(vo.shape, out.dtype, name="y")
        if scaled:
            nisa.scalar_tensor_tensor(dst=y, data=tb, op0=nl.multiply, operand0=float(alpha),
                                      op1=op, operand1=ta, reverse1=True)
        elif b_vec:
            nisa.tensor_scalar(dst=y, data=ta, op0=op, operand0=tb)
        elif a_vec:
            nisa.tensor_scalar(dst=y, data=tb, op0=op, operand0=ta, reverse0=True)
        else:
            nisa.tensor_tensor(dst=y, data1=ta, data2=tb, op=op)
        _store(vo, y)
        keep.append((ta, tb, y))
    return out


def chain(out, leaves, steps, stored=()):
    """A chain of element-wise ops in one pass over the tiles of out: each leaf (an HBM tensor the
    chain reads, broadcast to out's shape) is loaded once, every step computes into an SBUF tile of
    its own dtype (rounded as the separate ops would store it), the last step's tile is stored, and
    so is each step listed in stored ((step index, HBM tensor of out's shape): multi-output fusion).

    steps: (kind, op, operands, dtype) with kind "unary" | "binary" and operands ("leaf", i),
    ("step", j) or a number (a binary step has at least one tile operand)."""
    n_tiles = len(leaves) + len(steps)
    extra = [t for _, t in stored]
    plan = TilePlan(out, list(leaves) + extra, budget=max(P, min(COLS, BUDGET // (8 * n_tiles))))   # 2 iterations of fp32
    keep = deque(maxlen=_depth(plan, n_tiles))
    for vo, *views in plan:
        vleaves, vstored = views[:len(leaves)], views[len(leaves):]
        tiles = [_load(v, f"in{i}") for i, v in enumerate(vleaves)]
        done = _chain_steps(tiles, steps, vo.shape)
        for (j, _), v in zip(stored, vstored):
            _store(v, done[j])
        _store(vo, done[-1])
        keep.append((tiles, done))
    return out


def _chain_steps(tiles, steps, shape) -> list:
    done = []
    for kind, op, operands, dtype in steps:
        args = [o if not isinstance(o, tuple) else tiles[o[1]] if o[0] == "leaf" else done[o[1]]
                for o in operands]
        y = sbuf(shape, dtype, name=f"s{len(done)}")
        if kind == "unary" and op == "reciprocal":
            nisa.reciprocal(dst=y, data=args[0])
        elif kind == "unary":
            nisa.activation(dst=y, op=op, data=args[0])
        elif isinstance(args[1], (int, float)):
            nisa.tensor_scalar(dst=y, data=args[0], op0=op, operand0=float(args[1]))
        elif isinstance(args[0], (int, float)):     # number op tile, as scalar_op(reverse=True)
            nisa.tensor_scalar(dst=y, data=args[1], op0=op, operand0=float(args[0]), reverse0=True)
        else:
            nisa.tensor_tensor(dst=y, data1=args[0], data2=args[1], op=op)
        done.append(y)
    return done


def chain_reduce(out, leaves, steps, stored, op: str, scale: float = 1.0, reduced: int = -1):
    """A chain with one step reduced along the last dim (reduction fusion): rows on the partitions,
    each row's columns in the chunks rows.reduce_last uses, so the reduction adds the same partials
    in the same order. out [..., 1] = reduce(op, steps[reduced]) * scale; the steps listed in stored
    are written too (here the last step is stored only when listed)."""
    from trnlab.kernels import rows as rk
    if not _reduce_fits(leaves, steps):
        return _chain_then_reduce(out, leaves, steps, stored, op, scale, reduced)
    extra = [t for _, t in stored]
    lead, views = row_plan(leaves[0], *leaves[1:], *extra, out)
    vleaves, vstored, vo = views[:len(leaves)], views[len(leaves):-1], views[-1]
    keep = deque(maxlen=2)
    for idx, r0, r1 in row_blocks(lead):
        acc = None
        for c0, c1 in rk._chunks(leaves[0].shape[-1]):
            tiles = [_load(rk._rows(v, idx, r0, r1, c0, c1), f"in{i}") for i, v in enumerate(vleaves)]
            done = _chain_steps(tiles, steps, (r1 - r0, c1 - c0))
            for (j, _), v in zip(stored, vstored):
                _store(rk._rows(v, idx, r0, r1, c0, c1), done[j])
            part = rk._vec(r1 - r0, "part")
            nisa.tensor_reduce(dst=part, op=op, data=done[reduced], axis=1)
            if acc is not None:
                nisa.tensor_tensor(dst=acc, data1=acc, data2=part, op=rk._COMBINE[op])
            acc = acc if acc is not None else part
            keep.append((tiles, done))
        res = sbuf((r1 - r0, 1), out.dtype, name="res")
        if scale != 1.0:
            nisa.tensor_scalar(dst=res, data=acc, op0=nl.multiply, operand0=float(scale))
        else:
            nisa.tensor_copy(dst=res, src=acc)
        _store(rk._rows(vo, idx, r0, r1, 0, 1), res)
    return out


REDUCE_LIVE = 160 * 1024   # SBUF bytes per partition the fused reduction's live chunks may take


def _reduce_fits(leaves, steps) -> bool:
    """The fused pass keeps every leaf and step tile of a chunk (up to rows.CHUNK columns) for the current
    and two previous chunks; wide rows with many steps (GPT-3's 12288) would overflow SBUF."""
    from trnlab.kernels import rows as rk
    cols = min(rk.CHUNK, leaves[0].shape[-1])
    per_chunk = sum(cols * dt.itemsize(_load_dtype(t.dtype)) for t in leaves)
    per_chunk += sum(cols * dt.itemsize(dtype) for *_, dtype in steps)
    return 3 * per_chunk <= REDUCE_LIVE


def _load_dtype(dtype):
    return F32 if dtype in (nl.bool_, nl.uint8) else dtype


def _chain_then_reduce(out, leaves, steps, stored, op, scale, reduced):
    """The chain in one pass with the reduced step stored to HBM, then its reduction: what the unfused ops
    compute (each step rounded to its dtype, the same reduction chunks), for rows too wide to fuse."""
    from trnlab.kernels import rows as rk
    shape, last = tuple(leaves[0].shape), len(steps) - 1
    kept = dict(stored)
    scratch = {j: kept.get(j) for j in (reduced, last)}
    for j, t in scratch.items():
        if t is None:
            scratch[j] = nl.ndarray(shape, dtype=steps[j][3], buffer=nl.shared_hbm)
    extra = [(j, t) for j, t in stored if j != last] + ([(reduced, scratch[reduced])]
                                                      if reduced != last and reduced not in kept else [])
    chain(scratch[last], leaves, steps, stored=extra)
    rk.reduce_last(out, scratch[reduced], op, scale=scale)
    return out


def bitwise(out, a, b, op: str):
    """out = a op b on the integer bits (bitwise_and/or/xor); b an integer tensor or an int.

    Operands are loaded as out's integer dtype (the Vector engine's bitvec ops never go through fp32)."""
    tensors = [a] + ([] if _is_scalar(b) else [b])
    plan = TilePlan(out, tensors)
    keep = deque(maxlen=_depth(plan, 3))
    for vo, va, *vb in plan:
        ta = _load(va, "a", out.dtype)
        y = sbuf(vo.shape, out.dtype, name="y")
        if vb:
            tb = _load(vb[0], "b", out.dtype)
            nisa.tensor_tensor(dst=y, data1=ta, data2=tb, op=op)
        else:
            tb = None
            nisa.tensor_scalar(dst=y, data=ta, op0=op, operand0=int(b))
        _store(vo, y)
        keep.append((ta, tb, y))
    return out


def where(out, cond, a, b):
    """out = cond ? a : b with a, b tensors or scalars: b (memset or loaded in out's dtype), then a
    copied over it where cond is set (tensor_copy_predicated): exact for inf and NaN in either branch."""
    tensors = [cond] + [t for t in (a, b) if not _is_scalar(t)]
    plan = TilePlan(out, tensors)
    keep = deque(maxlen=_depth(plan, 3))
    for views in plan:
        vo, vc, rest = views[0], views[1], list(views[2:])
        c = _load(vc, "cond", nl.uint8)
        ta = _load(rest.pop(0), "a", out.dtype) if not _is_scalar(a) else float(a)
        if _is_scalar(b):
            y = sbuf(vo.shape, out.dtype, name="y")
            nisa.memset(dst=y, value=float(b))
        else:
            y = _load(rest.pop(0), "y", out.dtype)
        nisa.tensor_copy_predicated(dst=y, src=ta, predicate=c)
        _store(vo, y)
        keep.append((c, ta, y))
    return out


def _is_scalar(x) -> bool:
    return isinstance(x, (int, float, bool))


_NUMPY_OPS = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
              "maximum": np.maximum, "minimum": np.minimum}


def reference(a, b, op="multiply"):
    return _NUMPY_OPS[op](np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)).astype(np.asarray(a).dtype)


def example_inputs(shape_scale=1.0, dtype=np.float32, seed=0):
    """x [512 * shape_scale, 2048] times a [2048] row vector broadcast over the rows."""
    rng = np.random.default_rng(seed)
    return randn(rng, (scaled(512, shape_scale), 2048), dtype), randn(rng, (2048,), dtype)
