"""Run a captured aten graph on ONE simulated NeuronCore.

Weights are placed in HBM once per run (linear weights K-major, the layout the Tensor engine streams),
every lowered op issues ISA instructions on the same Machine, and each op's time is the growth of the
scheduled makespan while its instructions were issued (the per-op times sum to the total).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils import _pytree as pytree

from trnlab.core import compiler, dtypes as dt
from trnlab.core.machine import Machine, running
from trnlab.core.tensor import Tensor
from trnlab.errors import DeviceValueError, LoweringError
from trnlab.hw import graph_chip
from trnlab.runtime import timing_model
from trnlab.nki.tensor import NkiTensor
from trnlab.torch import capture
from trnlab.torch.blas import blas_threads
from trnlab.torch.fusion import find_act_muls, find_chains, find_rmsnorms
from trnlab.kernels import elementwise
from trnlab.kernels.rmsnorm import rmsnorm_into
from trnlab.torch.lowering import aten, dtype_reason, is_dev, refusal, registration

DEVICE_DTYPES = {torch.float32: dt.float32, torch.bfloat16: dt.bfloat16, torch.float16: dt.float16,
                 torch.int64: dt.int32, torch.int32: dt.int32, torch.int16: dt.int16, torch.int8: dt.int8,
                 torch.uint8: dt.uint8, torch.bool: dt.uint8}     # int64 held as int32 (lowering.py's policy)
INT32 = torch.iinfo(torch.int32)

VIEW_OPS = {aten.view, aten._unsafe_view, aten.permute, aten.transpose, aten.t, aten.expand, aten.unsqueeze,
            aten.squeeze, aten.slice, aten.select, aten.alias, aten.detach, aten.split, aten.split_with_sizes,
            aten.unbind, aten.chunk, aten.narrow, aten.dropout, aten.lift_fresh_copy}


def device_dtype(torch_dtype):
    try:
        return DEVICE_DTYPES[torch_dtype]
    except KeyError:
        raise NotImplementedError(f"dtype {torch_dtype} on the device") from None


def holdable(value: torch.Tensor) -> bool:
    """Can the device hold this host tensor (its dtype, and int64 values within int32)?"""
    if value.dtype not in DEVICE_DTYPES:
        return False
    if value.dtype != torch.int64 or value.is_meta or value.numel() == 0:
        return True
    return INT32.min <= int(value.min()) and int(value.max()) <= INT32.max


def _device_nbytes(v) -> int:
    """Bytes a host value takes in HBM (0 for values that stay on the host, e.g. float64)."""
    if isinstance(v, torch.Tensor) and v.dtype in DEVICE_DTYPES:
        return int(np.prod(v.shape)) * dt.itemsize(DEVICE_DTYPES[v.dtype])
    return 0


@dataclass
class OpRecord:
    name: str
    op: str
    args: str
    out: str
    time_s: float
    instructions: int
    hw_flops: float
    model_flops: float
    dma_bytes: int
    where: str            # "device" | "cpu-fallback"
    source: str
    host_s: float = 0.0


@dataclass
class RunResult:
    outputs: object
    ops: list
    latency_s: float
    machine: Machine
    wall_s: float
    fallbacks: list = field(default_factory=list)
    program: "Program | None" = None        # what ran (its graph: e.g. the activations a forward saves)


def model_flops(node) -> float:
    """Useful FLOPs of matmul-like nodes (2*M*N*K; attention counts the causal half)."""
    packet = getattr(node.target, "overloadpacket", None)
    val = node.meta.get("val")
    shape = lambda n: tuple(n.meta["val"].shape)  # noqa: E731
    if packet is aten.linear:
        return 2.0 * np.prod(val.shape) * shape(node.args[0])[-1]
    if packet in (aten.mm, aten.addmm, aten.bmm, aten.matmul):
        a = node.args[1] if packet is aten.addmm else node.args[0]
        return 2.0 * np.prod(val.shape) * shape(a)[-1]
    if packet is aten.scaled_dot_product_attention:
        return _attention_flops(node, 0, 5)
    if packet is aten._scaled_dot_product_flash_attention_for_cpu:
        return _attention_flops(node, 0, 4)
    if packet is aten._scaled_dot_product_flash_attention_for_cpu_backward:
        # recompute S = q k^T, then dP = dO v^T, dV = P^T dO, dK = dS^T q, dQ = dS k: five products of
        # 2 * pairs * D(v) FLOPs against the forward's two: 2.5x when Dv = D, FlashAttention's own count
        # (https://github.com/Dao-AILab/flash-attention/blob/main/benchmarks/benchmark_flash_attention.py)
        return 2.5 * _attention_flops(node, 1, 7)
    return 0.0


def _attention_flops(node, q_pos: int, causal_pos: int) -> float:
    """4 * B * H * (query, key) pairs * D: the forward's q k^T and P v (the causal half when causal)."""
    q, k = (tuple(node.args[i].meta["val"].shape) for i in (q_pos, q_pos + 1))
    sq, skv, d = q[-2], k[-2], q[-1]
    causal = node.kwargs.get("is_causal", len(node.args) > causal_pos and node.args[causal_pos])
    pairs = sum(min(skv, i + 1) for i in range(sq)) if causal else sq * skv
    return 4.0 * np.prod(q[:-2]) * pairs * d


class Program:
    """A captured model: graph analyses done once, runnable many times on fresh machines."""

    def __init__(self, ep, *, name: str = "model", fallback: str | None = None):
        self.ep = ep
        self.name = name
        self.fallback = fallback
        self.graph = ep.graph
        # an ExportedProgram (inference capture) or a plain aten GraphModule (AOTAutograd fw/bw graphs)
        self.info = capture.analyse(ep) if hasattr(ep, "graph_signature") else capture.analyse_graph(ep)
        fused = {**find_act_muls(self.graph), **find_rmsnorms(self.graph)}
        self.fused = {n: f for n, f in fused.items() if not any(refusal(m) for m in (n, *f.interior))}
        if compiler.current().elementwise_fusion:
            taken = set(self.fused) | {n for f in self.fused.values() for n in f.interior}
            taken |= {n for n in self.graph.nodes if n.op == "call_function" and refusal(n)}
            model = compiler.current()
            self.fused.update(find_chains(self.graph, taken, multi_output=model.multi_output_fusion,
                                          reductions=model.reduction_fusion))
        self.interior = {n for f in self.fused.values() for n in f.interior}
        self.stored = {n for f in self.fused.values() for n in f.outputs}     # interior, written to HBM too
        self.missing = capture.unsupported(ep, self.info, skip=self.interior | set(self.fused))
        if self.missing and fallback != "cpu":
            capture.raise_unsupported(self.missing, name)
        self.fallback_nodes = {m[3] for m in self.missing}
        self.folded_values = self._fold()
        self.order = {n: i for i, n in enumerate(self.graph.nodes)}
        self.last_use = {}
        for n in self.graph.nodes:
            for d in n.all_input_nodes:
                self.last_use[d] = self.order[n]
        self.linear_weights = {n.args[1] for n in self.graph.nodes
                               if getattr(n.target, "overloadpacket", None) is aten.linear}

    # --- compile-time work ----------------------------------------------------------------------
    def _fold(self) -> dict:
        env = dict(self.info.state)
        values = {}
        for node in self.graph.nodes:
            if node in self.info.folded:
                args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: env[n])
                env[node] = values[node] = node.target(*args, **kwargs)
        return values

    def device_nodes(self):
        return [n for n in self.graph.nodes if n.op == "call_function" and n not in self.info.folded
                and n not in self.interior]

    def weight_bytes(self, numerics_dtype=None) -> int:
        """Bytes of parameters and constants the device uses (linear weights counted once per layout)."""
        used = self._device_state()
        total = 0
        for node, layouts in used.items():
            v = self.info.state.get(node, self.folded_values.get(node))
            total += _device_nbytes(v) * len(layouts)
        return total

    def _device_state(self) -> dict:
        """State/folded node -> set of layouts it is placed in ('rows', 'kmajor')."""
        used: dict = {}
        for n in self.device_nodes():
            for i, d in enumerate(n.all_input_nodes):
                if d in self.info.state or d in self.folded_values:
                    kmajor = (getattr(n.target, "overloadpacket", None) is aten.linear and len(n.args) > 1
                              and n.args[1] is d and d in self.info.params)
                    used.setdefault(d, set()).add("kmajor" if kmajor else "rows")
        for n in self.info.outputs:
            if n in self.info.state or n in self.folded_values:
                used.setdefault(n, set()).add("rows")
        return used

    def activation_peak_bytes(self) -> int:
        """Peak bytes of live activations (views share their base; outputs live to the end)."""
        base, size, live, peak, current = {}, {}, {}, 0, 0
        ends = dict(self.last_use)
        for n in self.info.outputs:
            ends[n] = len(self.order)
        stored = [n for n in self.graph.nodes if n in self.stored]
        for n in sorted(list(self.info.user_inputs) + self.device_nodes() + stored, key=self._position):
            val = n.meta.get("val")
            packet = getattr(n.target, "overloadpacket", None)
            if packet in VIEW_OPS or packet is None and n.op == "call_function":
                src = n.all_input_nodes[0] if n.all_input_nodes else n
                base[n] = base.get(src, src)
            else:
                base[n] = n
                size[n] = sum(_nbytes(v) for v in (val if isinstance(val, (tuple, list)) else [val]))
                current += size[n]
            b = base[n]
            live[b] = max(live.get(b, 0), ends.get(n, self.order.get(n, 0)))
            peak = max(peak, current)
            here = self.order.get(n, -1)
            for b2, end in list(live.items()):
                if end <= here and b2 in size:
                    current -= size.pop(b2)
                    live.pop(b2)
        return peak

    def _position(self, node) -> int:
        return self.order.get(node, -1)

    # --- running ----------------------------------------------------------------------------------
    def run(self, inputs, *, target=None, numerics: bool = True, trace: bool = True, progress=None,
            hook=None) -> RunResult:
        """hook: None, or an object whose after(ctx, node) and finish(ctx) return OpRecords of what it issued
        on the same machine after a node and at the end (data_parallel.BucketIssuer: gradient collectives)."""
        t0 = time.perf_counter()
        m = Machine(graph_chip(target), numerics=numerics, scheduler=timing_model(True, trace), tensor_class=NkiTensor)
        flat = pytree.tree_flatten((tuple(inputs), {}))[0]
        ctx = _Ctx(self, m, numerics)
        records, fallbacks = [], []
        device_nodes = set(self.device_nodes())
        with running(m), blas_threads(1):      # restored when the run ends
            env = ctx.env
            self._place_state(ctx)
            for node, value in zip(self.info.user_inputs, flat):
                if isinstance(value, torch.Tensor):         # the dtype the graph was captured with
                    value = value.to(node.meta["val"].dtype)
                env[node] = ctx.bind(value, node.name)
            for node in self.graph.nodes:
                if node.op != "call_function" or node not in device_nodes:
                    continue
                records.append(self._run_node(ctx, node))
                if hook is not None:
                    records += hook.after(ctx, node)
                if progress is not None:
                    progress()
            if hook is not None:
                records += hook.finish(ctx)
            outputs = [self._to_host(ctx, n) if isinstance(n, torch.fx.Node) else n for n in self.info.outputs]
        sched = m.scheduler
        fallbacks = [r for r in records if r.where == "cpu-fallback"]
        return RunResult(pytree.tree_unflatten(outputs, self.info.out_spec), records, sched.end, m,
                         time.perf_counter() - t0, fallbacks, self)

    def _place_state(self, ctx):
        for node, layouts in self._device_state().items():
            value = self.info.state.get(node, self.folded_values.get(node))
            if not isinstance(value, torch.Tensor) or not holdable(value):
                ctx.env[node] = value                   # on the host: refused ops use it there
                continue
            rows_t = ctx.place(value, node.name) if "rows" in layouts else None
            if "kmajor" in layouts:
                kmajor = ctx.place(value.t(), node.name + ".T")
                if rows_t is None:
                    rows_t = kmajor.permute(1, 0)
                ctx.kmajor[rows_t.storage.uid] = kmajor
            ctx.env[node] = rows_t
            ctx.state_uids.add(rows_t.storage.uid)

    def _run_node(self, ctx, node) -> OpRecord:
        m = ctx.machine
        before_end, before_n = m.scheduler.end, sum(m.stats.instructions.values())
        before_flops, before_dma = m.scheduler.work.pe_flops, m.stats.dma_bytes
        ctx.node = node
        host_s = 0.0
        where = "device"
        fused = self.fused.get(node)
        if fused is not None and fused.kind == "act_mul":
            out = elementwise.binary(ctx.out(node), ctx.value(fused.x), ctx.value(fused.weight), "multiply",
                                     act_a=fused.func)
            op = f"{fused.func} * mul (fused)"
        elif fused is not None and fused.kind == "chain":
            out, op = _run_chain(ctx, node, fused), "fused " + " > ".join(
                str(s.target).replace("aten.", "").split(".")[0] for s in fused.steps + ((node,) if fused.reduce else ()))
        elif fused is not None:
            out = ctx.out(node)
            x = ctx.value(fused.x)
            c = x.shape[-1]
            w = ctx.value(fused.weight) if fused.weight is not None else None
            rmsnorm_into(out.reshape(out.size // c, c), _rows2d(ctx, x), None if w is None else w.reshape(c),
                         fused.eps)
            op = "rms_norm (fused)"
        elif node in self.fallback_nodes:
            t = time.perf_counter()
            out = self._host_fallback(ctx, node)
            host_s = time.perf_counter() - t
            where, op = "cpu-fallback", str(node.target)
        else:
            reg = registration(node.target)
            get = ctx.value if reg.dtypes is not None else ctx.env.get      # bookkeeping ops read nothing
            args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), get)
            out = reg.fn(ctx, node, *args, **kwargs)
            check_result(node, out)
            op = _op_label(node.target)
        ctx.env[node] = out
        return OpRecord(node.name, op, capture.describe_args(node), _describe_val(node.meta.get("val")),
                        m.scheduler.end - before_end, sum(m.stats.instructions.values()) - before_n,
                        m.scheduler.work.pe_flops - before_flops, model_flops(node) if fused is None else 0.0,
                        m.stats.dma_bytes - before_dma, where, capture.source_line(node), host_s)

    def _host_fallback(self, ctx, node):
        """Run one op on the host with PyTorch (device -> host -> device; no simulated time)."""
        def host(n):
            v = ctx.host_value(n)
            if is_dev(v):
                if not ctx.numerics:
                    meta = n.meta["val"]
                    return torch.zeros(meta.shape, dtype=meta.dtype)
                return _to_torch(v, n.meta["val"].dtype)
            return v
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), host)
        return node.target(*args, **kwargs)     # host tensors: placed when a device op reads them

    def _to_host(self, ctx, node):
        v = ctx.host_value(node)
        if not is_dev(v):
            return v
        meta = node.meta["val"]
        if not ctx.numerics:
            return torch.empty(meta.shape, dtype=meta.dtype, device="meta")
        return _to_torch(v, meta.dtype).reshape(meta.shape)


def _run_chain(ctx, node, fused):
    """A fused chain of element-wise nodes (trnlab.torch.fusion.find_chains) as one kernel pass; the
    members other nodes read (fused.outputs) are written to HBM by the same pass."""
    from trnlab.torch.fusion import chain_step
    index = {s: j for j, s in enumerate(fused.steps)}
    leaves, leaf_of, steps = [], {}, []
    for s in fused.steps:
        kind, op = chain_step(s)
        operands = []
        for a in s.args[:1 if kind == "unary" else 2]:
            if a in index:
                operands.append(("step", index[a]))
            elif isinstance(a, torch.fx.Node):
                if a not in leaf_of:
                    leaf_of[a] = len(leaves)
                    leaves.append(ctx.value(a))
                operands.append(("leaf", leaf_of[a]))
            else:
                operands.append(float(a))
        steps.append((kind, op, tuple(operands), device_dtype(s.meta["val"].dtype)))
    out = ctx.out(node)
    shape = tuple(fused.steps[0].meta["val"].shape)        # the steps' shape (out's, unless reduced)
    leaves = [t.broadcast_to(shape) if tuple(t.shape) != shape else t for t in leaves]
    stored = []
    for s in fused.outputs:
        ctx.env[s] = ctx.alloc(s.meta["val"].shape, device_dtype(s.meta["val"].dtype), s.name)
        stored.append((index[s], ctx.env[s]))
    if fused.reduce:
        op, scale, reduced = fused.reduce
        elementwise.chain_reduce(out.reshape(shape[:-1] + (1,)), leaves, steps, stored, op, scale, reduced)
        return out
    return elementwise.chain(out, leaves, steps, stored=stored)


def _rows2d(ctx, x):
    from trnlab.torch.lowering import reshape
    c = x.shape[-1]
    return reshape(ctx, x, (x.size // c, c))


def _nbytes(v) -> int:
    return _device_nbytes(v)


def check_result(node, out) -> None:
    """A lowering's outputs must have the captured graph's shapes and (device) dtypes."""
    meta = node.meta.get("val")
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    metas = list(meta) if isinstance(meta, (tuple, list)) else [meta]
    if len(outs) != len(metas):
        _mismatch(node, f"{len(outs)} outputs", f"{len(metas)}")
    for i, (o, m) in enumerate(zip(outs, metas)):
        if not isinstance(m, torch.Tensor) or (o is None and len(metas) > 1):    # unused extra outputs
            continue
        want = (tuple(int(s) for s in m.shape), device_dtype(m.dtype))
        if not isinstance(o, (Tensor, torch.Tensor)):
            _mismatch(node, f"output {i}: {type(o).__name__}", f"a tensor {want}")
        got = (tuple(o.shape), device_dtype(o.dtype) if isinstance(o, torch.Tensor) else o.dtype)
        if got != want:
            _mismatch(node, f"output {i}: shape {got[0]} dtype {got[1]}", f"shape {want[0]} dtype {want[1]}")


def _mismatch(node, got, want):
    raise LoweringError(f"internal error: the lowering of {node.target} ({node.name}, at {capture.source_line(node)}) "
                        f"produced {got}; the captured graph has {want}")


def _describe_val(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"{str(v.dtype).replace('torch.', '')}{list(v.shape)}"
    if isinstance(v, (tuple, list)):
        return ", ".join(_describe_val(x) for x in v if x is not None)
    return ""


def _to_torch(t, torch_dtype) -> torch.Tensor:
    arr = t.numpy()
    if arr.dtype == dt.bfloat16:
        out = torch.from_numpy(np.ascontiguousarray(arr).view(np.int16).copy()).view(torch.bfloat16)
        out = out.reshape(arr.shape)
    else:
        out = torch.from_numpy(np.ascontiguousarray(arr).copy())
    return out.reshape(arr.shape).to(torch_dtype)


def _op_label(target) -> str:
    """How the op table names a node's target: aten ops as torch prints them, Python graph functions (the
    tensor-parallel collectives of trnlab.torch.shard) by their name, not their repr with an address."""
    if callable(target) and not isinstance(target, torch._ops.OpOverload) and hasattr(target, "__name__"):
        return target.__name__
    return str(target)


class _Ctx:
    """What lowerings see: the machine, device values of nodes, allocation and liveness queries."""

    def __init__(self, program: Program, machine: Machine, numerics: bool):
        self.program = program
        self.machine = machine
        self.numerics = numerics
        self.env = {}
        self.kmajor = {}
        self.state_uids = set()
        self.node = None
        self.training = False
        self.collectives = {}         # collective node -> (dst, instruction) staged by shard.run_ranks

    def host_value(self, node):
        """The node's value where it is: an HBM tensor, a host tensor (refused dtypes, fallback results)."""
        if node in self.env:
            return self.env[node]
        if node in self.program.folded_values:      # a folded constant used directly
            v = self.program.folded_values[node]
            if isinstance(v, torch.Tensor) and holdable(v):
                v = self.place(v, node.name)
                self.state_uids.add(v.storage.uid)
            self.env[node] = v
            return v
        raise KeyError(f"no value for {node.name}")

    def value(self, node):
        """The node's value on the device (a host tensor is placed in HBM now, once)."""
        v = self.host_value(node)
        if isinstance(v, torch.Tensor):
            v = self.env[node] = self.place(v, node.name)
        elif isinstance(v, (tuple, list)) and any(isinstance(x, torch.Tensor) for x in v):
            v = self.env[node] = type(v)(self.place(x, f"{node.name}.{i}") if isinstance(x, torch.Tensor) else x
                                         for i, x in enumerate(v))
        return v

    def bind(self, value, name: str):
        """A host value entering the run: placed in HBM if the device can hold it, else kept on the host."""
        return self.place(value, name) if isinstance(value, torch.Tensor) and holdable(value) else value

    # --- allocation ---
    def alloc(self, shape, dtype, name=None):
        name = name or (self.node.name if self.node is not None else "t")
        shape = tuple(int(s) for s in shape)
        if self.numerics:
            t = self.machine.new_hbm(shape, dtype, name)
        else:
            t = self.machine.hbm_tensor(np.empty(shape, dtype=dt.storage(dtype)), name, dtype=dtype)
        return t if tuple(t.shape) == shape else t.reshape(shape)       # HBM holds 0-d tensors as [1]

    def out(self, node):
        val = node.meta["val"]
        return self.alloc(val.shape, device_dtype(val.dtype))

    def out_at(self, node, i):
        val = node.meta["val"][i]
        return self.alloc(val.shape, device_dtype(val.dtype), f"{node.name}.{i}")

    def place(self, value: torch.Tensor, name: str):
        """Host tensor -> HBM (no instructions: inputs and weights are on the device before the run)."""
        if not holdable(value):
            what = (f"int64 values in [{int(value.min())}, {int(value.max())}], beyond the int32 the device holds "
                    "int64 in" if value.dtype == torch.int64 else dtype_reason(value.dtype))
            raise DeviceValueError(f"'{name}' {str(value.dtype).replace('torch.', '')}{list(value.shape)} cannot be "
                                   f"placed on the NeuronCore: {what}; cast it or use fallback='cpu' for the "
                                   "ops that need these values")
        ddt = device_dtype(value.dtype)
        if value.is_meta or not self.numerics:
            arr = np.empty(tuple(value.shape), dtype=dt.storage(ddt))
        else:
            v = value.detach().cpu()
            if v.dtype == torch.bfloat16:
                arr = v.contiguous().view(torch.int16).numpy().copy().view(dt.bfloat16)
            elif v.dtype == torch.bool:
                arr = v.numpy().astype(np.uint8)
            else:
                arr = v.contiguous().numpy()
                # a copy: the device must never write into the caller's tensors (in-place KV updates)
                arr = arr.astype(dt.storage(ddt)) if arr.dtype != dt.storage(ddt) else arr.copy()
        t = self.machine.hbm_tensor(np.ascontiguousarray(arr), name, dtype=ddt)
        return t if tuple(t.shape) == tuple(value.shape) else t.reshape(tuple(value.shape))

    # --- layout / liveness ---
    def weight_t(self, w):
        """[N, K] weight -> [K, N] (the K-major copy placed for parameters; a strided view otherwise)."""
        kmajor = self.kmajor.get(w.storage.uid)
        return kmajor if kmajor is not None else w.permute(1, 0)

    def is_last_use(self, node, argpos: int) -> bool:
        src = node.args[argpos]
        if src in self.program.info.outputs:
            return False
        return self.program.last_use.get(src) == self.program.order[node]

    def owns(self, x) -> bool:
        return x.storage.uid not in self.state_uids
