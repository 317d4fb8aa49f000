"""Pattern fusions applied before lowering: RMSNorm as written by common model code.

    var = x.pow(2).mean(-1, keepdim=True); y = weight * (x * torch.rsqrt(var + eps))   (Llama, HF)

becomes one row kernel (one pass over x in SBUF instead of six HBM round trips).

Compiler-model fusions (trnlab.core.compiler; find_chains): chains of element-wise ops of one shape run
as one pass (elementwise_fusion); members other nodes also read are written by the pass instead of
ending the chain (multi_output_fusion: training graphs, whose forward saves its intermediates); a
last-dim sum / mean / amax joins the chain producing its input (reduction_fusion)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

aten = torch.ops.aten


@dataclass
class Fused:
    kind: str                 # "rms_norm" | "act_mul" | "chain"
    x: object                 # input node
    weight: object | None     # weight node (rms_norm) / the other factor (act_mul)
    eps: float                # rms_norm eps
    interior: tuple           # nodes replaced by the fused op (not run)
    func: str = ""            # act_mul: activation applied to x
    steps: tuple = ()         # chain: its nodes in graph order (the last one is the fused node)
    outputs: tuple = ()       # chain: interior nodes the pass also writes to HBM (multi-output fusion)
    reduce: tuple = ()        # chain with a last-dim reduction (the fused node): (op, scale, reduced step)


def _is(node, op) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target == op


def _single_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _other(mul, node):
    a, b = mul.args[:2]
    return b if a is node else a if b is node else None


def find_rmsnorms(graph) -> dict:
    """final node -> Fused for each RMSNorm pattern."""
    found = {}
    for r in graph.nodes:
        if not _is(r, aten.rsqrt.default):
            continue
        add = r.args[0]
        if not (_is(add, aten.add.Tensor) and isinstance(add.args[1], (int, float))):
            continue
        mean = add.args[0]
        if not (_is(mean, aten.mean.dim) and list(mean.args[1]) in ([-1],) and
                (len(mean.args) > 2 and mean.args[2] or mean.kwargs.get("keepdim"))):
            continue
        pw = mean.args[0]
        if not (_is(pw, aten.pow.Tensor_Scalar) and pw.args[1] == 2):
            continue
        x = pw.args[0]
        norm = _single_user(r)
        if not (_is(norm, aten.mul.Tensor) and _other(norm, r) is x):
            continue
        if any(_single_user(n) is None for n in (pw, mean, add)):
            continue
        interior = [pw, mean, add, r]
        last = norm
        nxt = _single_user(norm)
        if _is(nxt, aten._to_copy.default) and _single_user(nxt) is not None:
            interior.append(norm)
            last, nxt = nxt, _single_user(nxt)
        weight = None
        c = x.meta["val"].shape[-1]
        if _is(nxt, aten.mul.Tensor):
            w = _other(nxt, last)
            wv = w.meta.get("val") if isinstance(w, torch.fx.Node) else None
            if wv is not None and tuple(wv.shape) == (c,):
                interior.append(last)
                weight, last = w, nxt
        found[last] = Fused("rms_norm", x, weight, float(add.args[1]), tuple(interior))
    return found


_ACTS = {aten.silu.default: "silu", aten.gelu.default: "gelu", aten.relu.default: "relu",
         aten.sigmoid.default: "sigmoid"}


def find_act_muls(graph) -> dict:
    """act(a) * b with act(a) used only there (SwiGLU / GeGLU): one pass, act(a) never stored to HBM."""
    found = {}
    for node in graph.nodes:
        if not _is(node, aten.mul.Tensor):
            continue
        for act, other in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
            if (isinstance(act, torch.fx.Node) and act.target in _ACTS and len(act.users) == 1
                    and not act.kwargs and len(act.args) == 1 and isinstance(other, torch.fx.Node)
                    and tuple(act.meta["val"].shape) == tuple(node.meta["val"].shape)
                    and tuple(other.meta["val"].shape) == tuple(node.meta["val"].shape)):
                found[node] = Fused("act_mul", act.args[0], other, 0.0, (act,), _ACTS[act.target])
                break
    return found


# --- chains of element-wise ops --------------------------------------------------------------------
# aten op -> (kind, name): "binary" tensor op tensor (or op scalar), "unary" activation.
CHAIN_OPS = {aten.add.Tensor: ("binary", "add"), aten.sub.Tensor: ("binary", "subtract"),
             aten.mul.Tensor: ("binary", "multiply"), aten.div.Tensor: ("binary", "divide"),
             aten.add.Scalar: ("binary", "add"), aten.sub.Scalar: ("binary", "subtract"),
             aten.mul.Scalar: ("binary", "multiply"), aten.div.Scalar: ("binary", "divide"),
             aten.neg.default: ("unary", "negative"), aten.exp.default: ("unary", "exp"),
             aten.rsqrt.default: ("unary", "rsqrt"), aten.sqrt.default: ("unary", "sqrt"),
             aten.sigmoid.default: ("unary", "sigmoid"), aten.silu.default: ("unary", "silu"),
             aten.tanh.default: ("unary", "tanh"), aten.relu.default: ("unary", "relu"),
             aten.reciprocal.default: ("unary", "reciprocal")}
# x ** e with a number e, as the pow lowering computes it (trnlab.torch.lowering._pow)
POW_UNARY = {2.0: "square", 0.5: "sqrt", -0.5: "rsqrt", -1.0: "reciprocal", 1.0: "copy"}
FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def chain_step(node) -> tuple:
    """(kind, op) of a chain member: "unary" reads args[0]; "binary" reads args[0] and args[1] (either
    may be a number: 1 - x is a binary step with a number first)."""
    if node.target == aten.pow.Tensor_Scalar:
        e = float(node.args[1])
        return ("unary", POW_UNARY[e]) if e in POW_UNARY else ("binary", "power")
    return CHAIN_OPS[node.target]


def _chain_member(node) -> bool:
    if not (isinstance(node, torch.fx.Node) and node.op == "call_function"
            and (node.target in CHAIN_OPS or node.target == aten.pow.Tensor_Scalar)):
        return False
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor) or val.dtype not in FLOATS or node.kwargs.get("alpha", 1) != 1:
        return False
    for a in node.args:
        if isinstance(a, torch.fx.Node):
            v = a.meta.get("val")
            if not isinstance(v, torch.Tensor) or v.dtype not in FLOATS:
                return False
        elif not isinstance(a, (int, float)) or isinstance(a, bool):
            return False
    return any(isinstance(a, torch.fx.Node) for a in node.args[:1 if chain_step(node)[0] == "unary" else 2])


def _joinable(members: list, node, position: dict, multi_output: bool) -> bool:
    """Can `node` (the latest in graph order) join the group `members`, whose value it reads?

    Single-output: the value it reads has no other user. Multi-output (XLA's multi-output fusion):
    members may have users outside the group, provided each comes after `node`, where the fused pass
    runs (so they read the stored value, and nothing the group reads can depend on the group)."""
    inside = set(members) | {node}
    if not multi_output:
        return all(len(m.users) == 1 for m in members if m in node.args)
    return all(u in inside or position[u] > position[node] for m in members for u in m.users)


def find_chains(graph, taken: set, *, multi_output: bool = False, reductions: bool = False) -> dict:
    """fused node -> Fused("chain") for each group of >= 2 element-wise nodes of one output shape.

    Without multi_output every member but the last has its users in the group (no intermediate
    reaches HBM); with it, members used outside the group are written out by the pass too
    (Fused.outputs, the stored members besides the last). With reductions, a last-dim sum / mean /
    amax of a group member joins the group under the same rule when everything the group reads comes
    before it (the fused node is then the reduction; a lone element-wise node and its reduction form a
    group too)."""
    position = {n: i for i, n in enumerate(graph.nodes)}
    group_of: dict = {}
    for node in graph.nodes:                        # graph order: a node's producers come first
        if node in taken or not _chain_member(node):
            continue
        shape = tuple(node.meta["val"].shape)
        group = [node]
        for a in node.args:
            g = group_of.get(a)
            if (g is not None and g is not group and tuple(a.meta["val"].shape) == shape
                    and _joinable(g + group[:-1], node, position, multi_output)):
                group = g + [m for m in group if m not in g]
        for m in group:
            group_of[m] = group
    ends = {}
    for node in graph.nodes if reductions else ():
        red = _row_reduction(node) if node not in taken else None
        g = group_of.get(node.args[0]) if red else None
        if g is not None and id(g) not in ends and _joinable(g, node, position, multi_output) \
                and all(position[a] < position[node] for m in g for a in m.all_input_nodes if a not in g):
            ends[id(g)] = (node, red)       # the pass runs where the reduction is: every input is ready
    found, seen = {}, set()
    for node, group in group_of.items():
        if id(group) in seen:
            continue
        seen.add(id(group))
        order = sorted(group, key=position.__getitem__)
        end, red = ends.get(id(group), (None, ()))
        if len(order) < 2 and end is None:
            continue
        red = red and red + (order.index(end.args[0]),)
        inside = set(order) | {end}
        stored = tuple(m for m in order[:-1 if end is None else None] if any(u not in inside for u in m.users))
        key, interior = (order[-1], tuple(order[:-1])) if end is None else (end, tuple(order))
        found[key] = Fused("chain", None, None, 0.0, interior, steps=tuple(order), outputs=stored, reduce=red)
    return found


_REDUCTIONS = {aten.sum.dim_IntList: "add", aten.mean.dim: "add", aten.amax.default: "maximum"}


def _row_reduction(node) -> tuple | None:
    """(op, scale) of a float sum / mean / amax over the last dim only, else None."""
    if not (isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target in _REDUCTIONS):
        return None
    x, val = node.args[0], node.meta.get("val")
    xv = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
    if (not isinstance(xv, torch.Tensor) or not isinstance(val, torch.Tensor) or xv.ndim < 2
            or val.dtype not in FLOATS or val.dtype != xv.dtype or set(node.kwargs) - {"keepdim"}
            or len(node.args) < 2 or len(node.args) > 3 or not isinstance(node.args[1], (list, tuple))
            or [d % xv.ndim for d in node.args[1]] != [xv.ndim - 1] or xv.shape[-1] == 0):
        return None
    scale = 1.0 / xv.shape[-1] if node.target == aten.mean.dim else 1.0
    return _REDUCTIONS[node.target], scale
