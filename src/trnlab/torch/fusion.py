"""Pattern fusions applied before lowering: RMSNorm as written by common model code.

    var = x.pow(2).mean(-1, keepdim=True); y = weight * (x * torch.rsqrt(var + eps))   (Llama, HF)

becomes one row kernel (one pass over x in SBUF instead of six HBM round trips)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

aten = torch.ops.aten


@dataclass
class Fused:
    kind: str                 # "rms_norm" | "act_mul"
    x: object                 # input node
    weight: object | None     # weight node (rms_norm) / the other factor (act_mul)
    eps: float                # rms_norm eps
    interior: tuple           # nodes replaced by the fused op (not run)
    func: str = ""            # act_mul: activation applied to x


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
