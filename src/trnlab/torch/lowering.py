"""The one lowering registry: aten op -> a function that runs trnlab kernels on the machine.

A lowering gets the executor context, the FX node and its arguments with tensors already on the
device (HBM views); it returns HBM tensors. Views cost nothing (strided HBM views); everything that
moves or computes data issues ISA instructions through the kernel library trnlab.kernels.
Ops not listed here are decomposed by PyTorch first (see capture.preserved_ops); whatever is left
without a lowering is reported by UnsupportedOperatorError.

Each registration declares what the lowering computes correctly, and `refusal(node)` checks a
captured node against it before anything runs (a refused node is listed in the one
UnsupportedOperatorError, or run on the host with fallback='cpu'):

- dtypes: the tensor dtypes of inputs and outputs it accepts. Type promotion is PyTorch's: the
  output dtype is the one in the captured graph (node.meta['val']); engines compute in fp32 and
  round on the write to that dtype (bitwise ops work on the integer bits).
- supports: a predicate on the node's arguments for lowerings that handle only some of them
  (e.g. addmm with beta == 1); it returns the reason when the arguments are not handled.

Dtype policy. The NeuronCore holds fp32, bf16, fp16 and 8/16/32-bit integers (bool as uint8).
- float64 and complex are never on the device: any op touching them is refused.
- int64 is held as int32 and is accepted only by ops that move or index with it (views, copies,
  cat/stack, embedding/index_select/index_copy indices, argmax indices, casts) and by bitwise
  and/or/xor/not (exact on int32 bits), never by arithmetic or comparisons, where int32 wrap-around
  or fp32 rounding would differ from PyTorch. Casts from floats to int64 are refused. int64 values
  entering the device (inputs, constants, host-fallback results) are checked to fit int32 when
  they are placed; DeviceValueError otherwise.
- Integer arithmetic (int8..int32) runs on the Vector engine in fp32, as the hardware does: exact
  while |values| < 2**24.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from trnlab.core import dtypes as dt
from trnlab.core.tensor import Tensor
from trnlab.errors import DeviceValueError
from trnlab.kernels import elementwise as ew, gather, rows
from trnlab.kernels._common import dma_copy_split
from trnlab.kernels.flash_attention import flash_attention_into
from trnlab.kernels.gemm import gemm_into
from trnlab.kernels.layernorm import layernorm_into
from trnlab.kernels.rmsnorm import rmsnorm_into
from trnlab.kernels.softmax import softmax_into
from trnlab.kernels.training import fill

aten = torch.ops.aten

FLOATS = frozenset({torch.float32, torch.bfloat16, torch.float16})
INTS = frozenset({torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool})
VALUES = FLOATS | INTS                    # default: what engines compute on
INDEX = VALUES | {torch.int64}            # ops that only move data or index with it


@dataclass(frozen=True)
class Lowering:
    fn: Callable
    dtypes: frozenset | None = VALUES     # None: bookkeeping op, touches no data
    supports: Callable | None = None      # (node, *args, **kwargs) -> reason it is not handled, or None


LOWERINGS: dict = {}


def lowers(*ops, dtypes=VALUES, supports=None):
    def register(fn):
        for op in ops:
            LOWERINGS[op] = Lowering(fn, dtypes, supports)
        return fn
    return register


def registration(target) -> Lowering | None:
    """The registration of an FX call target (an OpOverload, its packet, or a Python operator)."""
    if target in LOWERINGS:
        return LOWERINGS[target]
    return LOWERINGS.get(getattr(target, "overloadpacket", None))


def lowering_for(target):
    """The lowering function of an FX call target, or None."""
    reg = registration(target)
    return None if reg is None else reg.fn


def refusal(node) -> str | None:
    """Why the device cannot run this captured node ('' / None when it can)."""
    reg = registration(node.target)
    if reg is None:
        return "no trnlab lowering"
    if reg.dtypes is not None:
        for dtype in _tensor_dtypes(node):
            if dtype not in reg.dtypes:
                return dtype_reason(dtype)
    if reg.supports is not None:
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), _meta)
        try:
            return reg.supports(node, *args, **kwargs)
        except TypeError as e:              # arguments the lowering's signature does not take
            return f"arguments not handled by the lowering ({e})"
    return None


def dtype_reason(dtype) -> str:
    name = str(dtype).replace("torch.", "")
    if dtype == torch.int64:
        return ("int64 arithmetic not supported on NeuronCore (int64 is held as int32 and engines compute "
                "in fp32, so results could wrap or round); use fallback='cpu' or cast")
    return f"{name} not supported on NeuronCore; use fallback='cpu' or cast"


def check_compile_dtype(dtype) -> None:
    """trnlab.torch.compile(dtype=...): the dtype floating-point models run in on the device."""
    if dtype not in FLOATS:
        raise DeviceValueError(f"trnlab.torch.compile(dtype={dtype}): the NeuronCore computes floating-point "
                               f"models in float32, bfloat16 or float16, not {str(dtype).replace('torch.', '')}")


def _tensor_dtypes(node):
    vals = [a.meta.get("val") for a in node.all_input_nodes] + [node.meta.get("val")]
    flat = []
    for v in vals:
        flat.extend(v if isinstance(v, (list, tuple)) else [v])
    return [v.dtype for v in flat if isinstance(v, torch.Tensor)]


def _meta(n):
    return n.meta.get("val")


def is_dev(x) -> bool:
    return isinstance(x, Tensor)


# --- views (free) ------------------------------------------------------------------------------------
def _shape(node):
    return tuple(int(s) for s in node.meta["val"].shape)


def contiguous_copy(ctx, x):
    out = ctx.alloc(tuple(x.shape), x.dtype)
    dma_copy_split(out, x)
    return out


def reshape(ctx, x, shape):
    try:
        return x.reshape(shape)
    except Exception:
        return contiguous_copy(ctx, x).reshape(shape)


@lowers(aten.view, aten.view_copy, dtypes=INDEX)
def _view(ctx, node, x, shape, *_):
    return reshape(ctx, x, _shape(node))


@lowers(aten.permute, aten.permute_copy, dtypes=INDEX)
def _permute(ctx, node, x, dims):
    return x.permute(tuple(d % x.ndim for d in dims))


@lowers(aten.expand, dtypes=INDEX)
def _expand(ctx, node, x, *_ , **__):
    return x.broadcast_to(_shape(node))


@lowers(aten.unsqueeze, aten.squeeze, aten.alias, dtypes=INDEX)
def _reshape_like(ctx, node, x, *_):
    return reshape(ctx, x, _shape(node))


@lowers(aten.slice, dtypes=INDEX)
def _slice(ctx, node, x, dim=0, start=None, end=None, step=1):
    dim %= x.ndim
    n = x.shape[dim]
    start = 0 if start is None else start
    end = n if end is None else end
    start, end = (start + n if start < 0 else start), (end + n if end < 0 else end)
    start, end = max(0, min(n, start)), max(0, min(n, end))
    key = (slice(None),) * dim + (slice(start, max(start, end), step),)
    return x.index(key)


@lowers(aten.select, dtypes=INDEX)
def _select(ctx, node, x, dim, index):
    dim %= x.ndim
    return x.index((slice(None),) * dim + (int(index),))


@lowers(aten.split, aten.split_with_sizes, dtypes=INDEX)
def _split(ctx, node, x, sizes, dim=0):
    dim %= x.ndim
    n = x.shape[dim]
    sizes = [sizes] * math.ceil(n / sizes) if isinstance(sizes, int) else list(sizes)
    out, start = [], 0
    for s in sizes:
        end = min(n, start + s)
        out.append(x.index((slice(None),) * dim + (slice(start, end),)))
        start = end
    return out


@lowers(aten.unbind, dtypes=INDEX)
def _unbind(ctx, node, x, dim=0):
    dim %= x.ndim
    return [x.index((slice(None),) * dim + (i,)) for i in range(x.shape[dim])]


@lowers(operator.getitem, dtypes=INDEX)
def _getitem(ctx, node, seq, i):
    return seq[i]


# --- data movement ------------------------------------------------------------------------------------
def _cast_refusal(src, node) -> str | None:
    out = node.meta["val"]
    if isinstance(src, torch.Tensor) and src.is_floating_point() and out.dtype == torch.int64:
        return "float-to-int64 cast: the values may not fit the int32 the NeuronCore holds int64 in"
    return None


def _cast_into(node, out, x, src):
    """A copy of x (captured as src) into out's dtype with PyTorch's cast rules (the DMA rounds to
    nearest and saturates; bool and uint8 share the device's uint8)."""
    to = node.meta["val"].dtype
    if to == torch.bool and src.meta["val"].dtype != torch.bool:
        return ew.scalar_op(out, x, "not_equal", 0.0)
    if not to.is_floating_point and to != torch.bool and dt.is_float(x.dtype):
        return ew.unary(out, x, "trunc")                 # PyTorch truncates toward zero
    dma_copy_split(out, x)
    return out


@lowers(aten.clone, aten._to_copy, aten.type_as, dtypes=INDEX,
        supports=lambda node, x, *_, **__: _cast_refusal(x, node))
def _copy(ctx, node, x, *args, **kwargs):
    return _cast_into(node, ctx.out(node), x, node.args[0])


@lowers(aten.copy, dtypes=INDEX, supports=lambda node, x, src, *_: _cast_refusal(src, node))
def _copy_from(ctx, node, x, src, *args):
    out = ctx.out(node)
    return _cast_into(node, out, src.broadcast_to(out.shape), node.args[1])


@lowers(aten.cat, dtypes=INDEX)
def _cat(ctx, node, tensors, dim=0):
    out = ctx.out(node)
    dim %= out.ndim
    start = 0
    for t in tensors:
        if t.size == 0:
            continue
        n = t.shape[dim]
        dma_copy_split(out.index((slice(None),) * dim + (slice(start, start + n),)), t)
        start += n
    return out


@lowers(aten.stack, dtypes=INDEX)
def _stack(ctx, node, tensors, dim=0):
    out = ctx.out(node)
    dim %= out.ndim
    for i, t in enumerate(tensors):
        dma_copy_split(out.index((slice(None),) * dim + (i,)), t)
    return out


@lowers(aten.embedding, dtypes=INDEX)
def _embedding(ctx, node, weight, indices, *_):
    out = ctx.out(node)
    flat_idx = reshape(ctx, indices, (indices.size,))
    gather.gather_rows(out.reshape(indices.size, weight.shape[1]), weight, flat_idx)
    return out


@lowers(aten.index_select, dtypes=INDEX)
def _index_select(ctx, node, x, dim, index):
    out = ctx.out(node)
    index = index.reshape((1,)) if index.ndim == 0 else index      # a 0-d index keeps the dim (size 1)
    dim %= x.ndim
    order = (dim,) + tuple(i for i in range(x.ndim) if i != dim)
    gather.gather_rows(out.permute(order), x.permute(order), index)
    return out


@lowers(aten.index_copy, dtypes=INDEX)
def _index_copy(ctx, node, x, dim, index, source):
    """Functional index_copy; in place when x is not used afterwards (the KV-cache update)."""
    dim %= x.ndim
    out = x if ctx.is_last_use(node, 0) and ctx.owns(x) else contiguous_copy(ctx, x)
    order = (dim,) + tuple(i for i in range(x.ndim) if i != dim)
    gather.scatter_rows(out.permute(order), source.permute(order), index)
    return out


def _first_output_only(node) -> str | None:
    """Lowerings that compute only output 0 of a multi-output op (the statistics / mask are not made)."""
    used = sorted({u.args[1] for u in node.users if u.target is operator.getitem and u.args[1] != 0})
    return f"{node.target} with its output(s) {used} used (only output 0 is lowered)" if used else None


def _dropout_refusal(node, x, p=0.0, train=False):
    if train and p > 0:
        return "dropout in training mode (random masks are not simulated)"
    return _first_output_only(node)


@lowers(aten.native_dropout, supports=_dropout_refusal)
def _dropout(ctx, node, x, p=0.0, train=False):
    return x, None


# --- matmuls ------------------------------------------------------------------------------------------
def _mm(ctx, out, a, b, bias=None):
    gemm_into(out, a, b, bias)
    return out


@lowers(aten.linear, dtypes=FLOATS,
        supports=lambda node, x, w, b=None: None if w.ndim == 2 else f"linear with a {w.ndim}-D weight")
def _linear(ctx, node, x, weight, bias=None):
    out = ctx.out(node)
    k = x.shape[-1]
    a = reshape(ctx, x, (x.size // k, k))
    o2 = out.reshape(out.size // weight.shape[0], weight.shape[0])
    w_t = ctx.weight_t(weight)          # [K, N] laid out once at placement
    return _mm(ctx, o2, a, w_t, bias).reshape(out.shape)


@lowers(aten.mm, dtypes=FLOATS)
def _mm_op(ctx, node, a, b):
    return _mm(ctx, ctx.out(node), a, b)


def _addmm_refusal(node, bias, a, b, beta=1, alpha=1):
    if beta != 1 or alpha != 1:
        return f"addmm with beta={beta}, alpha={alpha} (only beta = alpha = 1 is lowered)"
    if bias.ndim != 1:
        return f"addmm with a {bias.ndim}-D input (only a 1-D bias is lowered)"
    return None


@lowers(aten.addmm, dtypes=FLOATS, supports=_addmm_refusal)
def _addmm(ctx, node, bias, a, b, beta=1, alpha=1):
    return _mm(ctx, ctx.out(node), a, b, bias)


@lowers(aten.bmm, aten.matmul, dtypes=FLOATS,
        supports=lambda node, a, b: None if a.ndim >= 2 and b.ndim >= 2 else "matmul with a 1-D operand")
def _bmm(ctx, node, a, b):
    out = ctx.out(node)
    if a.ndim == 2 and b.ndim == 2:
        return _mm(ctx, out, a, b)
    if b.ndim == 2:                          # [..., M, K] @ [K, N]
        k = a.shape[-1]
        return _mm(ctx, out.reshape(out.size // b.shape[1], b.shape[1]), reshape(ctx, a, (a.size // k, k)), b
                   ).reshape(out.shape)
    batch = out.shape[:-2]
    ab, bb = a.broadcast_to(batch + a.shape[-2:]), b.broadcast_to(batch + b.shape[-2:])
    for idx in np.ndindex(*batch):
        _mm(ctx, out.index(idx), ab.index(idx), bb.index(idx))
    return out


def _sdpa_refusal(node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if dropout_p:
        return f"scaled_dot_product_attention with dropout_p={dropout_p} (random masks are not simulated)"
    if not q.ndim == k.ndim == v.ndim or q.ndim not in (3, 4):
        return (f"scaled_dot_product_attention on rank-{q.ndim}/{k.ndim}/{v.ndim} q/k/v "
                "(only [B, H, S, D] or [B, S, D] are lowered)")
    return None


@lowers(aten.scaled_dot_product_attention, supports=_sdpa_refusal)   # bool or float masks
def _sdpa(ctx, node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    out = ctx.out(node)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    o4 = out
    if q.ndim == 3:
        q, k, v, o4 = (t.reshape((1,) + tuple(t.shape)) for t in (q, k, v, out))
    flash_attention_into(o4, q, k, v, scale=scale, causal=bool(is_causal), mask=attn_mask)
    return out


# --- normalisation, softmax, reductions ---------------------------------------------------------------
def _dim_last(ctx, x, dim):
    dim %= x.ndim
    if dim == x.ndim - 1:
        return x, None
    order = tuple(i for i in range(x.ndim) if i != dim) + (dim,)
    return x.permute(order), order


@lowers(aten._softmax, aten.softmax, aten._log_softmax, aten.log_softmax, dtypes=FLOATS)
def _softmax(ctx, node, x, dim, *_):
    out = ctx.out(node)
    xv, order = _dim_last(ctx, x, dim)
    ov = out.permute(order) if order else out
    softmax_into(ov, xv, log="log_softmax" in str(node.target))
    return out


@lowers(aten.native_layer_norm, dtypes=FLOATS)
def _native_layer_norm(ctx, node, x, shape, weight, bias, eps):
    """layer_norm and, when the graph uses them (training saves them for backward), each row's mean
    and rstd (shape [..., 1, ...] with ones over the normalised dims, as PyTorch's)."""
    c = int(np.prod(shape))
    used = {u.args[1] for u in node.users if u.target is operator.getitem}
    out = ctx.out_at(node, 0)
    mean = ctx.out_at(node, 1) if 1 in used else None
    rstd = ctx.out_at(node, 2) if 2 in used else None
    rows = x.size // c
    layernorm_into(out.reshape(rows, c), reshape(ctx, x, (rows, c)), _flat(weight), _flat(bias), eps,
                   mean=None if mean is None else mean.reshape(rows, 1),
                   rstd=None if rstd is None else rstd.reshape(rows, 1))
    return out, mean, rstd


@lowers(aten.layer_norm, dtypes=FLOATS)
def _layer_norm(ctx, node, x, shape, weight=None, bias=None, eps=1e-5, *_):
    out = ctx.out(node)
    c = int(np.prod(shape))
    layernorm_into(out.reshape(out.size // c, c), reshape(ctx, x, (x.size // c, c)), _flat(weight), _flat(bias), eps)
    return out


@lowers(aten.rms_norm, dtypes=FLOATS)
def _rms_norm(ctx, node, x, shape, weight=None, eps=None):
    out = ctx.out(node)
    c = int(np.prod(shape))
    eps = float(torch.finfo(node.meta["val"].dtype).eps) if eps is None else eps
    rmsnorm_into(out.reshape(out.size // c, c), reshape(ctx, x, (x.size // c, c)), _flat(weight), eps)
    return out


def _flat(t):
    return None if t is None else t.reshape(t.size)


def _reduce_view(ctx, x, dims):
    """x permuted so the reduced dims are last and merged into one: [..., C]."""
    dims = sorted(d % x.ndim for d in dims)
    keep = [i for i in range(x.ndim) if i not in dims]
    xp = x.permute(tuple(keep + dims))
    c = int(np.prod([x.shape[d] for d in dims])) if dims else 1
    lead = tuple(x.shape[i] for i in keep)
    return reshape(ctx, xp, lead + (c,)), lead


def _reduction(op, scale_by_count=False):
    def lower(ctx, node, x, dims=None, keepdim=False, *_, **__):
        out = ctx.out(node)
        dims = list(range(x.ndim)) if dims is None or dims == [] else ([dims] if isinstance(dims, int) else list(dims))
        dims = sorted(d % x.ndim for d in dims)
        scale_of = (lambda c: 1.0 / c) if scale_by_count else (lambda c: 1.0)
        if len(dims) == x.ndim and x.size >= 2 * PARTITIONS and x.size % PARTITIONS == 0:
            return _reduce_all(ctx, out, x, op, scale_of(x.size))
        k = len(dims)
        if op == "add" and 0 < k < x.ndim and dims == list(range(k)) and dt.is_float(x.dtype) \
                and dt.is_float(out.dtype):
            return _sum_leading(ctx, out, x, k, scale_by_count)
        if _slices_reduce(x, out, dims):
            return _reduce_slices(ctx, out, x, dims, op, scale_of)
        xv, lead = _reduce_view(ctx, x, dims)
        c = xv.shape[-1]
        rows.reduce_last(out.reshape(lead + (1,)), xv, op, scale=scale_of(c))
        return out
    return lower


SLICES = 16        # a reduction over at most this many slices of inner dims runs as element-wise steps


def _slices_reduce(x, out, dims) -> bool:
    """A reduction over a few consecutive middle dims whose inner dims stay (GQA's backward sums dK, dV over
    the query heads sharing a KV head: [.., group, S, D] -> [.., 1, S, D]): permuting the reduced dims last
    would walk `group` strided elements per row; adding the group's contiguous slices reads each element once."""
    n = int(np.prod([x.shape[d] for d in dims])) if dims else 0
    inner = int(np.prod(x.shape[dims[-1] + 1:])) if dims else 0
    return (1 < n <= SLICES and dims == list(range(dims[0], dims[-1] + 1)) and dims[-1] < x.ndim - 1
            and inner % PARTITIONS == 0 and dt.is_float(x.dtype) and dt.is_float(out.dtype))


def _reduce_slices(ctx, out, x, dims, op, scale_of):
    """out = op over the slices x[a, i, b] of the reduced dims, one element-wise pass: each slice viewed as
    [outer, 128, inner / 128] (the inner dims on the partitions), fp32 steps (as the reduction accumulates),
    the last rounded to out's dtype (times 1/n for a mean)."""
    outer = int(np.prod(x.shape[:dims[0]]))
    n = int(np.prod([x.shape[d] for d in dims]))
    inner = x.size // (outer * n)
    x4 = reshape(ctx, x, (outer, n, PARTITIONS, inner // PARTITIONS))
    leaves = [x4.index((slice(None), i)) for i in range(n)]
    steps, prev = [], ("leaf", 0)
    for i in range(1, n):
        steps.append(("binary", op, (prev, ("leaf", i)), dt.float32))
        prev = ("step", len(steps) - 1)
    scale = scale_of(n)
    last = ("binary", "multiply", (prev, float(scale)), out.dtype) if scale != 1.0 else \
        ("unary", "copy", (prev,), out.dtype)
    ew.chain(out.reshape((outer, PARTITIONS, inner // PARTITIONS)), leaves, steps + [last])
    return out


PARTITIONS = 128


def _reduce_all(ctx, out, x, op, scale):
    """A reduction to one value in two stages, as on the chip: every partition reduces its share of
    the elements, then one partition reduces the 128 fp32 partials (one partition alone would walk
    every element)."""
    partial = ctx.alloc((PARTITIONS, 1), dt.float32, f"{ctx.node.name}.partial")
    rows.reduce_last(partial, reshape(ctx, x, (PARTITIONS, x.size // PARTITIONS)), op)
    rows.reduce_last(out.reshape(1, 1), partial.reshape(1, PARTITIONS), op, scale=scale)
    return out


def _sum_leading(ctx, out, x, k, mean):
    """Sum (mean) over the k leading dims (a bias or norm-weight gradient: over the tokens) as
    ones[1, R] @ x[R, C] on the Tensor engine: the rows stream contiguously and the partition-dim
    sum accumulates in PSUM (reducing along the free dim would need x transposed element by element)."""
    r = int(np.prod(x.shape[:k]))
    c = x.size // r
    ones = ctx.alloc((1, r), dt.float32 if mean else x.dtype)
    fill(ones, 1.0 / r if mean else 1.0)
    gemm_into(out.reshape(1, c), ones, reshape(ctx, x, (r, c)))
    return out


def _no_int64_input(node, x, *_, **__):
    return dtype_reason(torch.int64) if x.dtype == torch.int64 else None


lowers(aten.sum)(_reduction("add"))
lowers(aten.mean)(_reduction("add", scale_by_count=True))
lowers(aten.amax)(_reduction("maximum"))
lowers(aten.amin)(_reduction("minimum"))


def _argreduce(largest):
    def lower(ctx, node, x, dim=None, keepdim=False):
        out = ctx.out(node)
        xv, lead = _reduce_view(ctx, x, [dim] if dim is not None else list(range(x.ndim)))
        rows.argmax_last(out.reshape(lead + (1,)), xv, largest=largest)
        return out
    return lower


# the int64 outputs are indices into a dim (they fit int32); int64 inputs are refused
lowers(aten.argmax, dtypes=INDEX, supports=_no_int64_input)(_argreduce(True))
lowers(aten.argmin, dtypes=INDEX, supports=_no_int64_input)(_argreduce(False))


@lowers(aten.max, aten.min, dtypes=INDEX, supports=_no_int64_input)
def _max_dim(ctx, node, x, dim=None, keepdim=False):
    largest = node.target.overloadpacket is aten.max
    if dim is None:
        return _reduction("maximum" if largest else "minimum")(ctx, node, x)
    values, indices = ctx.out_at(node, 0), ctx.out_at(node, 1)
    xv, lead = _reduce_view(ctx, x, [dim])
    rows.argmax_last(indices.reshape(lead + (1,)), xv, values=values.reshape(lead + (1,)), largest=largest)
    return values, indices


# --- elementwise --------------------------------------------------------------------------------------
def _scalar(x):
    if isinstance(x, torch.Tensor):
        return x.item()
    return x


def _binary_refusal(node, a, b, alpha=None, rounding_mode=None):
    if rounding_mode is not None:
        return (f"division with rounding_mode={rounding_mode!r} (fp32 a / b then rounding can differ from "
                "PyTorch's exact floor/trunc division)")
    if not isinstance(a, torch.Tensor) and alpha not in (None, 1):
        return f"scalar {node.target.__name__} tensor with alpha={alpha}"
    return None


def _binary(op):
    def lower(ctx, node, a, b, alpha=None, rounding_mode=None):   # rounding_mode: refused unless None
        out = ctx.out(node)
        if is_dev(a) and is_dev(b):
            return ew.binary(out, a, b, op, alpha=alpha)
        if is_dev(a):
            s = _scalar(b) * (alpha if alpha is not None else 1)
            return ew.scalar_op(out, a, op, s)
        return ew.scalar_op(out, b, op, _scalar(a), reverse=True)
    return lower


for _op, _name in [(aten.add, "add"), (aten.sub, "subtract"), (aten.mul, "multiply"), (aten.div, "divide"),
                   (aten.maximum, "maximum"), (aten.minimum, "minimum"), (aten.eq, "equal"),
                   (aten.ne, "not_equal"), (aten.lt, "less"), (aten.le, "less_equal"), (aten.gt, "greater"),
                   (aten.ge, "greater_equal"), (aten.logical_and, "logical_and"),
                   (aten.logical_or, "logical_or"), (aten.logical_xor, "logical_xor")]:
    lowers(_op, supports=_binary_refusal)(_binary(_name))


def _bitwise(op):
    def lower(ctx, node, a, b):
        if not is_dev(a):
            a, b = b, a                     # the ops commute
        return ew.bitwise(ctx.out(node), a, b if is_dev(b) else int(_scalar(b)), op)
    return lower


def _bitwise_refusal(node, a, b):
    for x in (a, b):
        if not isinstance(x, torch.Tensor) and not -2**31 <= int(x) < 2**31:
            return f"{node.target.__name__} with the scalar {x}, beyond the int32 the device computes in"
    return None


# and/or/xor/not of values that fit int32 fit int32: int64 (held as int32) is exact here
for _op, _name in [(aten.bitwise_and, "bitwise_and"), (aten.bitwise_or, "bitwise_or"),
                   (aten.bitwise_xor, "bitwise_xor")]:
    lowers(_op, dtypes=INTS | {torch.int64}, supports=_bitwise_refusal)(_bitwise(_name))


@lowers(aten.bitwise_not, dtypes=INTS | {torch.int64})
def _bitwise_not(ctx, node, x):
    if node.meta["val"].dtype == torch.bool:
        return ew.bitwise(ctx.out(node), x, 1, "bitwise_xor")
    return ew.bitwise(ctx.out(node), x, -1, "bitwise_xor")


_ACT = {aten.relu: "relu", aten.sigmoid: "sigmoid", aten.tanh: "tanh", aten.silu: "silu", aten.exp: "exp",
        aten.log: "log", aten.sqrt: "sqrt", aten.rsqrt: "rsqrt", aten.neg: "negative", aten.abs: "abs",
        aten.sin: "sin", aten.cos: "cos", aten.erf: "erf", aten.reciprocal: "reciprocal", aten.sign: "sign",
        aten.floor: "floor", aten.ceil: "ceil", aten.trunc: "trunc", aten.square: "square",
        aten.softplus: "softplus", aten.mish: "mish"}


def _unary(func):
    def lower(ctx, node, x, *_, **__):
        return ew.unary(ctx.out(node), x, func)
    return lower


for _op, _fn in _ACT.items():
    lowers(_op)(_unary(_fn))


@lowers(aten.gelu)
def _gelu(ctx, node, x, approximate="none"):
    return ew.unary(ctx.out(node), x, "gelu_apprx_tanh" if approximate == "tanh" else "gelu")


@lowers(aten.logical_not)
def _not(ctx, node, x):
    return ew.scalar_op(ctx.out(node), x, "equal", 0.0)


@lowers(aten.pow)
def _pow(ctx, node, a, b):
    out = ctx.out(node)
    if not is_dev(a):                       # scalar ** tensor
        return ew.scalar_op(out, b, "power", float(a), reverse=True)
    if is_dev(b):
        return ew.binary(out, a, b, "power")
    e = float(_scalar(b))
    special = {2.0: "square", 0.5: "sqrt", -0.5: "rsqrt", -1.0: "reciprocal", 1.0: "copy"}
    if e in special:
        return ew.unary(out, a, special[e])
    return ew.scalar_op(out, a, "power", e)


def _clamp_refusal(node, x, *bounds):
    if any(isinstance(b, torch.Tensor) for b in bounds):
        return f"{node.target.__name__} with tensor bounds (only number bounds are lowered)"
    return None


@lowers(aten.clamp, aten.clamp_min, aten.clamp_max, aten.hardtanh, supports=_clamp_refusal)
def _clamp(ctx, node, x, lo=None, hi=None):
    out = ctx.out(node)
    name = node.target.overloadpacket
    if name is aten.clamp_max:
        lo, hi = None, lo
    if name is aten.hardtanh:
        lo = -1.0 if lo is None else lo
        hi = 1.0 if hi is None else hi
    if lo is not None and hi is not None:
        return ew.scalar_op(out, x, "maximum", float(lo), op1="minimum", scalar1=float(hi))
    if lo is not None:
        return ew.scalar_op(out, x, "maximum", float(lo))
    return ew.scalar_op(out, x, "minimum", float(hi))


@lowers(aten.where)
def _where(ctx, node, cond, a, b):
    return ew.where(ctx.out(node), cond, _scalar(a) if not is_dev(a) else a, _scalar(b) if not is_dev(b) else b)


@lowers(aten.masked_fill)
def _masked_fill(ctx, node, x, mask, value):
    return ew.where(ctx.out(node), mask, _scalar(value) if not is_dev(value) else value, x)


# --- bookkeeping ops (no data) ------------------------------------------------------------------------
@lowers(aten._assert_tensor_metadata, aten._assert_scalar, dtypes=None)
def _noop(ctx, node, *_, **__):
    return None


# ops whose PyTorch implementation we keep (not decomposed): everything above that has a
# decomposition in torch.export's default table. Ops that torch.export always traces through
# (CompositeImplicitAutograd: reshape, flatten, transpose, t, chunk, narrow, contiguous, to, dropout,
# rsub, ...) never reach a lowering and have none.
PRESERVED = [aten.linear.default, aten.scaled_dot_product_attention.default, aten.rms_norm.default,
             aten.silu.default, aten.embedding.default, aten.index_copy.default, aten.layer_norm.default,
             aten.softmax.int, aten.log_softmax.int, aten.matmul.default,
             aten.gelu.default, aten.clamp_min.default, aten.clamp_max.default, aten.square.default,
             aten.hardtanh.default, aten.index_select.default, aten.stack.default, aten.split.Tensor,
             aten.unbind.int, aten.type_as.default, aten.masked_fill.Scalar, aten.masked_fill.Tensor,
             aten.argmax.default, aten.mish.default, aten.softplus.default]


def covered_ops() -> list[str]:
    """Names of the ops with a lowering (aten packets and Python operators)."""
    return sorted(str(k) if hasattr(k, "overloads") else getattr(k, "__name__", str(k)) for k in LOWERINGS)


from trnlab.torch import lowering_train  # noqa: E402,F401  (training ops register here; imported last)
from trnlab.torch import lowering_attention  # noqa: E402,F401  (the SDPA flash ops and their backward)
from trnlab.torch import sequence_parallel  # noqa: E402,F401  (the plan layers' free SP gather/scatter)
