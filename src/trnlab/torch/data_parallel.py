"""Data parallelism for training (trnlab.torch.trainer.train(dp=N, zero1=...), `trnlab train --dp N`).

The global batch is split into N equal micro-batches, one per data-parallel rank. Every rank runs forward
and backward of its micro-batch on its own simulated NeuronCore (each graph run is a fresh Machine); the
ranks' gradients are then combined with the numpy semantics of trnlab.isa.collectives:

  plain DP  each rank divides its gradients by N, an all-reduce sums them (fp32 accumulation, rounded once
            to the compute dtype), every rank runs the same optimizer step on the same averaged gradients
            (simulated once: the ranks' inputs and instruction streams are identical, so are the results).
  ZeRO-1    a reduce-scatter leaves rank r with block r of the averaged gradient of every parameter (dim 0
            zero-padded to a multiple of N); rank r's optimizer keeps the fp32 master weights and states of
            that block only and updates it; an all-gather of the updated parameters (compute dtype) gives
            every rank the whole model again. Optimizer time and optimizer HBM per core drop by ~N.
  NxD does both: neuronx_distributed.parallel_layers.grads.bucket_allreduce_gradients pre-divides by the DP
  size and all-reduces buckets of at most 512 MB (https://github.com/aws-neuron/neuronx-distributed/blob/main/
  src/neuronx_distributed/parallel_layers/grads.py); its ZeRO-1 optimizer shards the optimizer states over
  the DP ranks (https://awsdocs-neuron.readthedocs-hosted.com/en/latest/_sources/archive/nxd-training/zero1_gpt2.rst).

Timing (per step, t = 0 at the start of forward). The gradient collectives run on each rank's backward
timeline (issue 11): while a rank's backward graph runs (trainer: `with gradient_sync(GradientSync(...)):
loss.backward()`), a BucketIssuer hooked into executor.Program.run buckets the graph's gradients in the order
the graph produces them (NxD walks the parameters in reverse, which is the order backward produces them),
flushing a bucket when the next gradient would take it past bucket_bytes (a gradient larger than the cap goes
alone), and once the last gradient of a bucket has been computed it issues the bucket's ISA instruction
(trnlab.isa.cc.CollectiveInstruction: all-reduce, or reduce-scatter for ZeRO-1) on the same Machine. It
waits for the gradients it reads, runs on the collective unit ("cc", one collective at a time) for
collective_cost(op, bucket bytes, dp, system, itemsize of the compute dtype, launch="graph") and moves
queue_bytes (nccl-tests' bus bytes per rank) through the rank's DMA queues, so it overlaps the rest of
backward and contends with backward's DMAs for the queues (timing.scheduler). launch="graph": NxD's
bucket_allreduce_gradients (grads.py above) is called inside the training step that torch-xla traces into one
graph, so the collectives are nodes of the compiled step graph, not host launches (the ZeRO-1 all-gather too).
Every rank issues a bucket at its own arrival: the DP ranks run the same graphs on same-shaped micro-batches,
so their timelines coincide (a bucket's span in the step is the latest over the ranks). The values: the
instruction on the timeline carries no inputs (rank r's backward runs before rank r+1's exists, one torch
autograd call each); once every rank's backward has run, the averaged gradients are computed by the same
executable spec the instruction executes (trnlab.isa.collectives: all_reduce_mean / reduce_scatter_mean), so
they are bit-identical to before. Then
    backward end = the slowest rank's backward compute end (Scheduler.compute_end: DMA contention included)
    sync end     = the end of its backward timeline (compute and gradient collectives)
    step         = sync end + optimizer (+ ZeRO-1 all-gather after it, not overlapped)
collectives_total_s is the sum of the collectives' times, collectives_exposed_s the part on the critical
path (step minus backward end and optimizer). chrome_trace(step) is the step as a Perfetto trace: one
process per rank with its ops (op level: training graphs keep no instruction trace) and its collective
track. Limits: a bucket does not span backward graphs (graph breaks); the ZeRO-1 all-gather is costed
beside the timeline and not overlapped with the next step's forward.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import torch

from trnlab.errors import OptionError, ShapeError
from trnlab.isa.collectives import collective_cost

BUCKET_BYTES = 512 * 1024 * 1024       # NxD's _ALLREDUCE_BUCKET_CAP_MB (see the module docstring)


# --- arguments ------------------------------------------------------------------------------------------
def check_dp(dp, batch: int, system) -> int:
    """dp as an int, or OptionError naming the limit: 1 <= dp <= the system's ranks, a multiple of its
    nodes (ranks fill nodes evenly), and a divisor of the global batch."""
    from trnlab.torch.shard import positive_int
    positive_int("dp", dp)
    if dp > system.ranks:
        raise OptionError(f"dp={dp} exceeds the {system.ranks} ranks of {system.name}")
    if dp > 1 and dp % system.nodes:
        raise OptionError(f"dp={dp} must be a multiple of the {system.nodes} nodes of {system.name}")
    if batch % dp:
        raise OptionError(f"dp={dp} does not divide the global batch of {batch} sequences; the batch must be a "
                          f"multiple of dp (e.g. batch {dp * max(1, batch // dp)})")
    return dp


def split_batch(tensor: torch.Tensor, dp: int) -> list:
    """The global batch cut into dp equal micro-batches along dim 0 (rank r gets block r)."""
    return list(torch.chunk(tensor, dp, dim=0))


# --- numerics: the collectives on the ranks' gradients --------------------------------------------------
def _np(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    from trnlab.core import dtypes as dt
    v = t.detach().to(dtype).contiguous()
    if dtype == torch.bfloat16:
        return v.view(torch.int16).numpy().view(dt.bfloat16)
    return v.numpy()


def _torch(a: np.ndarray) -> torch.Tensor:
    from trnlab.core import dtypes as dt
    a = np.ascontiguousarray(a)
    if a.dtype == dt.bfloat16:
        return torch.from_numpy(a.astype(np.float32))
    return torch.from_numpy(a.copy()).float()


def _pre_divided(grads: list, dp: int, dtype: torch.dtype) -> list:
    """Each rank's gradient divided by dp in the compute dtype (NxD divides before the sum)."""
    return [_np((g.to(dtype) / dp), dtype) for g in grads]


def all_reduce_mean(rank_grads: list, dtype: torch.dtype) -> list:
    """rank_grads[r][i]: rank r's gradient of parameter i (None: no gradient). Returns the averaged gradient
    of each parameter (fp32 tensors holding compute-dtype values), as every rank has it after the all-reduce."""
    from trnlab.isa import collectives as cc
    dp, out = len(rank_grads), []
    for i in range(len(rank_grads[0])):
        grads = [g[i] for g in rank_grads]
        if any(g is None for g in grads):
            out.append(None)
            continue
        out.append(_torch(cc.all_reduce(_pre_divided(grads, dp, dtype))[0]).reshape(grads[0].shape))
    return out


def pad_rows(t: torch.Tensor, dp: int) -> torch.Tensor:
    """t with dim 0 zero-padded to a multiple of dp (a 0-d tensor as [1])."""
    t = t.reshape(1) if t.dim() == 0 else t
    extra = -t.shape[0] % dp
    return t if not extra else torch.cat([t, t.new_zeros((extra, *t.shape[1:]))])


def reduce_scatter_mean(rank_grads: list, dtype: torch.dtype) -> list:
    """ZeRO-1: out[r][i] is rank r's block (dim 0, padded) of the averaged gradient of parameter i."""
    from trnlab.isa import collectives as cc
    dp = len(rank_grads)
    out = [[] for _ in range(dp)]
    for i in range(len(rank_grads[0])):
        grads = [g[i] for g in rank_grads]
        if any(g is None for g in grads):
            for r in range(dp):
                out[r].append(None)
            continue
        blocks = cc.reduce_scatter(_pre_divided([pad_rows(g, dp) for g in grads], dp, dtype), axis=0)
        for r in range(dp):
            out[r].append(_torch(blocks[r]))
    return out


def all_gather_rows(blocks: list, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """ZeRO-1: the ranks' updated blocks of one parameter, in the compute dtype, all-gathered along dim 0
    and cut back to the parameter's shape (fp32 tensor holding compute-dtype values)."""
    from trnlab.isa import collectives as cc
    whole = _torch(cc.all_gather([_np(b, dtype) for b in blocks], axis=0)[0])
    n = shape[0] if len(shape) else 1
    return whole[:n].reshape(shape)


class Zero1Optimizer:
    """ZeRO-1 over the model's parameters: rank r's optimizer (trnlab.torch.optim, on its own simulated
    core) owns block r (dim 0, padded) of every parameter, as an fp32 tensor (its master) with its states."""

    def __init__(self, params: list, dp: int, make_optimizer, dtype: torch.dtype):
        self.params, self.dp, self.dtype = [p for p in params if p.requires_grad], dp, dtype
        self.shards = [[torch.nn.Parameter(pad_rows(p.detach().float(), dp).chunk(dp)[r].clone())
                        for p in self.params] for r in range(dp)]
        self.optimizers = [make_optimizer(shards) for shards in self.shards]

    def step(self, grad_blocks: list) -> None:
        """grad_blocks[r][i]: rank r's block of parameter i's averaged gradient (reduce_scatter_mean)."""
        for shards, blocks, opt in zip(self.shards, grad_blocks, self.optimizers):
            for s, g in zip(shards, blocks):
                s.grad = None if g is None else g.reshape(s.shape).float()
            opt.step()
            opt.zero_grad()
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(all_gather_rows([shards[i] for shards in self.shards], p.shape, self.dtype).to(p.dtype))

    @property
    def last_steps(self) -> list:
        return [opt.last_step for opt in self.optimizers]

    def shard_elements(self) -> int:
        return sum(s.numel() for s in self.shards[0])


def zero1_elements(model: torch.nn.Module, dp: int) -> int:
    """Elements of one rank's ZeRO-1 block of every trainable parameter (dim 0 padded to a multiple of dp)."""
    total = 0
    for p in model.parameters():
        if p.requires_grad:
            rows = p.shape[0] if p.dim() else 1
            total += -(-rows // dp) * (p.numel() // rows if rows else 0)
    return total


# --- timing ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bucket:
    nbytes: int
    ready_s: float
    tensors: int


@dataclass(frozen=True)
class Span:
    """One collective on the step's timeline (seconds from the start of forward)."""
    op: str
    nbytes: int
    tensors: int
    ready_s: float
    start_s: float
    end_s: float
    algorithm: str

    def to_dict(self) -> dict:
        return {"op": self.op, "bytes": self.nbytes, "tensors": self.tensors, "ready_us": self.ready_s * 1e6,
                "start_us": self.start_s * 1e6, "end_us": self.end_s * 1e6,
                "latency_us": (self.end_s - self.start_s) * 1e6, "algorithm": self.algorithm}


# --- the gradient collectives on each rank's backward timeline --------------------------------------
_ACTIVE: ContextVar = ContextVar("trnlab_gradient_sync", default=None)
API = "trnlab.torch.data_parallel (NxD bucket_allreduce_gradients)"


@dataclass(frozen=True)
class GradientSync:
    """The gradient collectives one rank's backward graphs issue (trainer: `with gradient_sync(sync):
    loss.backward()`): `op` ("all-reduce", or "reduce-scatter" for ZeRO-1) over `ranks` ranks of `system`,
    in buckets of at most bucket_bytes of `dtype` gradients. queues=False is the what-if in which the
    collectives do not occupy the rank's DMA queues (only the cc unit). `issuers`: one per backward graph run."""
    op: str
    ranks: int
    system: object
    dtype: torch.dtype
    bucket_bytes: int = BUCKET_BYTES
    queues: bool = True
    issuers: list = field(default_factory=list, compare=False)

    def issuer(self, program) -> "BucketIssuer":
        it = BucketIssuer(self, program)
        self.issuers.append(it)
        return it


@contextmanager
def gradient_sync(sync: GradientSync):
    """Backward graphs run inside issue `sync`'s gradient collectives on their own timeline."""
    token = _ACTIVE.set(sync)
    try:
        yield sync
    finally:
        _ACTIVE.reset(token)


def active_sync() -> "GradientSync | None":
    return _ACTIVE.get()


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per element of a floating compute dtype (the gradients' and parameters')."""
    return torch.finfo(dtype).bits // 8


class BucketIssuer:
    """Program.run's hook for one backward graph: its floating outputs (the gradients) bucketed in the order
    the graph produces them (a view's position is its base's: NxD walks the parameters in reverse, the order
    backward produces them); once the last gradient of the next bucket has been computed, the bucket's
    CollectiveInstruction (trnlab.isa.cc) is issued on the same machine: it waits for the gradients it reads,
    runs on the collective unit for collective_cost(op, bucket bytes, ranks, system, launch="graph") and
    moves queue_bytes through the rank's DMA queues, beside the rest of backward."""

    def __init__(self, sync: GradientSync, program):
        from trnlab.torch.trainer import _storage_base
        self.sync, self.spans = sync, []
        size = dtype_bytes(sync.dtype)
        grads = []
        for node in program.info.outputs:
            val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
            if isinstance(val, torch.Tensor) and val.is_floating_point():
                base = _storage_base(node)
                pos = program.order.get(base, program.order.get(node, -1))
                grads.append((node, base, int(val.numel()) * size, pos))
        groups = bucket_groups([(g[2], g[3]) for g in grads], sync.bucket_bytes)
        self.pending = [[grads[i] for i in g] for g in groups]

    def after(self, ctx, node) -> list:
        out = []
        while self.pending and all(_value(ctx, g) is not None for g in self.pending[0]):
            out.append(self._issue(ctx, self.pending.pop(0)))
        return out

    def finish(self, ctx) -> list:
        out = [self._issue(ctx, b) for b in self.pending]
        self.pending = []
        return out

    def _issue(self, ctx, members: list):
        from trnlab.isa import collectives as cc
        from trnlab.isa.cc import CC_UNIT, CollectiveInstruction, queue_bytes
        from trnlab.torch.executor import OpRecord, device_dtype
        s, m = self.sync, ctx.machine
        sched = m.scheduler
        nbytes = sum(g[2] for g in members)
        scatter = s.op == "reduce-scatter"
        srcs = [t for t in (_source(_value(ctx, g), s.ranks if scatter else 0) for g in members) if t is not None]
        if not srcs:        # no gradient on the device (host fallbacks): the bucket's bytes still move
            srcs = [ctx.alloc((s.ranks,), device_dtype(s.dtype), "gradient bucket")]
        dsts = [ctx.alloc(_scattered(t.shape, s.ranks) if scatter else t.shape, t.dtype, f"{t.name}.{s.op}")
                for t in srcs]
        seconds, algorithm = system_cost(s.system, s.ranks, dtype_bytes(s.dtype))(s.op, nbytes)
        moved = queue_bytes(s.op, int(nbytes), s.ranks) if s.queues else 0
        instr = CollectiveInstruction(api=API, loc=f"gradient bucket {len(self.spans)}",
                                      collective=cc.ReduceScatter(op="add", axis=0) if scatter else cc.AllReduce(),
                                      srcs=tuple(srcs), dsts=tuple(dsts), ranks=s.ranks, seconds=seconds,
                                      queue_bytes=moved)
        ready, start = sched.operands_ready(instr), sched.ready_at(instr)
        before, n0 = sched.end, sum(m.stats.instructions.values())
        m.issue(instr)
        end = sched.free_at[CC_UNIT]
        self.spans.append(Span(s.op, int(nbytes), len(members), ready, start, end, algorithm))
        return OpRecord(f"gradient_{s.op.replace('-', '_')}_{len(self.spans) - 1}", s.op,
                        f"{len(members)} gradients", f"{nbytes} B", sched.end - before,
                        sum(m.stats.instructions.values()) - n0, 0.0, 0.0, moved, "device", API)


def _scattered(shape: tuple, ranks: int) -> tuple:
    return (shape[0] // ranks, *shape[1:])


def _value(ctx, grad):
    """The gradient's value once computed (its node's, or its base's for a view not yet made), else None."""
    node, base = grad[0], grad[1]
    for n in (node, base):
        try:
            return ctx.host_value(n)
        except KeyError:
            continue
    return None


def _source(value, scatter_ranks: int):
    """The device tensor the collective reads (None: the value is on the host). A reduce-scatter reads it
    flat, cut to a multiple of the ranks (ZeRO-1 pads dim 0 instead; the bytes moved are the bucket's)."""
    from trnlab.core.tensor import HBM
    if getattr(value, "buffer", None) != HBM:
        return None
    if not scatter_ranks:
        return value
    try:
        flat = value.reshape((value.size,))
    except ShapeError:          # a strided view: read whole when dim 0 divides
        return value if value.shape and value.shape[0] % scatter_ranks == 0 else None
    n = value.size - value.size % scatter_ranks
    return flat[0:n] if n else None


def bucket_groups(grads: list, cap_bytes: int = BUCKET_BYTES) -> list:
    """grads: (bytes, ready) pairs. The buckets as lists of indices into grads, in ready order, NxD's rule: add
    gradients until the next one would take the bucket past cap_bytes; a gradient larger than the cap flushes
    the open bucket and goes alone."""
    out, cur, size = [], [], 0
    for i in sorted(range(len(grads)), key=lambda i: grads[i][1]):
        nbytes = grads[i][0]
        if cur and (nbytes > cap_bytes or size + nbytes > cap_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += nbytes
        if nbytes > cap_bytes:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def buckets(grads: list, cap_bytes: int = BUCKET_BYTES) -> list:
    """grads: (bytes, ready_s) pairs. Buckets in ready order (bucket_groups); a bucket is ready when its last
    gradient is."""
    return [Bucket(sum(grads[i][0] for i in g), max(grads[i][1] for i in g), len(g))
            for g in bucket_groups(grads, cap_bytes)]


def schedule(bkts: list, cost, op: str, start_s: float = 0.0) -> list:
    """One collective per bucket on one stream: it starts when its bucket is ready and the previous
    collective has ended. cost(op, nbytes) -> (seconds, algorithm)."""
    spans, free = [], start_s
    for b in bkts:
        seconds, algorithm = cost(op, b.nbytes)
        start = max(b.ready_s, free)
        free = start + seconds
        spans.append(Span(op, b.nbytes, b.tensors, b.ready_s, start, free, algorithm))
    return spans


def system_cost(system, ranks: int, itemsize: int = 4, launch: str = "graph"):
    """cost(op, nbytes) -> (seconds, algorithm) of collective_cost over `ranks` ranks of `system` (a node of the
    traced step graph by default, as NxD runs them; see the module docstring)."""
    def cost(op: str, nbytes: int):
        c = collective_cost(op, int(nbytes), ranks, system, itemsize=itemsize, launch=launch)
        return c.latency_s, c.algorithm
    return cost


@dataclass(frozen=True)
class DataParallelStep:
    """One data-parallel training step's timeline (seconds from the start of forward)."""
    dp: int
    zero1: bool
    system: str
    bucket_bytes: int
    forward_s: float              # the slowest rank's
    backward_s: float
    optimizer_s: float
    gradient_sync: list           # Spans: all-reduces (or reduce-scatters) overlapping backward
    param_gather: list            # Spans: ZeRO-1 all-gathers after the optimizer
    ranks: list                   # per rank: forward_s, backward_s, optimizer_s, loss
    rank_ops: tuple = ()          # per rank: (op name, start_s, end_s) of its forward and backward ops

    @property
    def backward_end_s(self) -> float:
        return self.forward_s + self.backward_s

    @property
    def sync_end_s(self) -> float:
        return max([self.backward_end_s] + [s.end_s for s in self.gradient_sync])

    @property
    def step_s(self) -> float:
        gather = sum(s.end_s - s.start_s for s in self.param_gather)
        return self.sync_end_s + self.optimizer_s + gather

    @property
    def collectives_total_s(self) -> float:
        return sum(s.end_s - s.start_s for s in self.gradient_sync + self.param_gather)

    @property
    def collectives_exposed_s(self) -> float:
        return self.step_s - self.backward_end_s - self.optimizer_s

    def to_dict(self) -> dict:
        return {"dp": self.dp, "zero1": self.zero1, "system": self.system, "bucket_bytes": self.bucket_bytes,
                "collectives_us": self.collectives_exposed_s * 1e6,
                "collectives_total_us": self.collectives_total_s * 1e6,
                "backward_end_us": self.backward_end_s * 1e6, "gradient_sync_end_us": self.sync_end_s * 1e6,
                "collectives": [s.to_dict() for s in self.gradient_sync + self.param_gather],
                "ranks": [{(k[:-2] + "_ms" if k.endswith("_s") else k): (v * 1e3 if k.endswith("_s") else v)
                           for k, v in r.items()} for r in self.ranks]}


def op_spans(record) -> list:
    """(op, start_s, end_s) of a rank's forward then backward ops, each graph's ops one after another (an op's
    span: from the graph's scheduled end before it to the end after it)."""
    out, t = [], 0.0
    runs = [("forward", r) for r in record.forward_runs] + [("backward", r) for r in record.backward_runs]
    for kind, run in runs:
        start = t
        for rec in run.ops:
            if rec.time_s > 0 and rec.source != API:        # the gradient collectives: the cc track
                out.append((f"{kind} {rec.op.replace('aten.', '').replace('.default', '')}", t, t + rec.time_s))
            t += rec.time_s
        t = start + run.latency_s
    return out


def chrome_trace(step: DataParallelStep, name: str) -> dict:
    """The step as Chrome trace-event JSON (ui.perfetto.dev): one process per rank with a compute track
    (its forward and backward ops, then the optimizer) and a collective track ("cc")."""
    events = []
    for row in step.ranks:
        pid, r = row["rank"] + 1, row["rank"]
        events += [{"ph": "M", "pid": pid, "tid": 0, "name": "process_name",
                    "args": {"name": f"rank {r}: {name} data-parallel step on {step.system}"}},
                   {"ph": "M", "pid": pid, "tid": 0, "name": "process_sort_index", "args": {"sort_index": pid}},
                   {"ph": "M", "pid": pid, "tid": 1, "name": "thread_name", "args": {"name": "compute"}},
                   {"ph": "M", "pid": pid, "tid": 2, "name": "thread_name", "args": {"name": "cc"}}]
        ops = step.rank_ops[r] if r < len(step.rank_ops) else []
        events += [_slice(pid, 1, op, a, b, "compute") for op, a, b in ops]
        events.append(_slice(pid, 1, "optimizer", step.sync_end_s, step.sync_end_s + row["optimizer_s"], "compute"))
        events += [_slice(pid, 2, f"{s.op} {s.nbytes} B ({s.algorithm})", s.start_s, s.end_s, "cc")
                   for s in step.gradient_sync + step.param_gather]
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"model": name, "system": step.system, "ranks": step.dp, "step_us": step.step_s * 1e6,
                          "collectives_us": step.collectives_exposed_s * 1e6}}


def _slice(pid, tid, name, start, end, cat) -> dict:
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "cat": cat, "ts": start * 1e6, "dur": (end - start) * 1e6}


def backward_compute_s(record) -> float:
    """When the rank's backward compute ends (its graphs one after another; a graph's collectives run on past
    its compute end into the next): the last graph's compute end on its timeline."""
    t, end = 0.0, 0.0
    for run in record.backward_runs:
        end = t + run.machine.scheduler.compute_end
        t += run.latency_s
    return end


def rank_row(rank: int, record, optimizer_s: float, loss: float) -> dict:
    return {"rank": rank, "forward_s": sum(r.latency_s for r in record.forwards),
            "backward_s": backward_compute_s(record), "sync_s": sum(r.latency_s for r in record.backwards),
            "optimizer_s": optimizer_s, "loss": loss}


def rank_spans(sync: GradientSync, record, start_s: float) -> list:
    """A rank's gradient collectives as Spans from the start of forward (start_s: its forward time), each
    backward graph's spans offset by the graphs before it."""
    out, t = [], start_s
    for issuer, run in zip(sync.issuers, record.backward_runs):
        out += [Span(x.op, x.nbytes, x.tensors, t + x.ready_s, t + x.start_s, t + x.end_s, x.algorithm)
                for x in issuer.spans]
        t += run.latency_s
    return out


def step_timeline(records: list, optimizer_s: list, losses: list, *, system, zero1: bool, syncs: list = (),
                  bucket_bytes: int = BUCKET_BYTES, gather_bytes: tuple = (), dtype=torch.float32) -> DataParallelStep:
    """The step's timeline from each rank's Training record (forward and backward Reports; the backward
    timelines carry the rank's gradient collectives, syncs[r] their spans) and optimizer time. Every rank
    issues each bucket at its own arrival: the DP ranks run the same graphs on same-shaped micro-batches, so
    their timelines coincide (a bucket's span is the latest over the ranks). gather_bytes: ZeRO-1's all-gather
    size of each parameter (padded, in the compute dtype), bucketed like the gradients, after the optimizer."""
    dp = len(records)
    rows = [rank_row(r, rec, o, loss) for r, (rec, o, loss) in enumerate(zip(records, optimizer_s, losses))]
    fwd = max(r["forward_s"] for r in rows)
    bwd = max(r["forward_s"] + r["backward_s"] for r in rows) - fwd
    sync, gather = [], []
    if dp > 1 and syncs:
        per_rank = [rank_spans(sy, rec, row["forward_s"]) for sy, rec, row in zip(syncs, records, rows)]
        sync = [Span(ys[0].op, ys[0].nbytes, ys[0].tensors, max(y.ready_s for y in ys), max(y.start_s for y in ys),
                     max(y.end_s for y in ys), ys[0].algorithm) for ys in zip(*per_rank)]
        if zero1:
            start = max([fwd + bwd] + [r["forward_s"] + r["sync_s"] for r in rows]) + max(optimizer_s)
            cost = system_cost(system, dp, dtype_bytes(dtype))
            gather = schedule(buckets([(b, start) for b in gather_bytes], bucket_bytes), cost, "all-gather", start)
    return DataParallelStep(dp, zero1, system.name, bucket_bytes, fwd, bwd, max(optimizer_s), sync, gather, rows,
                            tuple(op_spans(rec) for rec in records))


__all__ = ["BUCKET_BYTES", "check_dp", "split_batch", "all_reduce_mean", "reduce_scatter_mean", "all_gather_rows",
           "Zero1Optimizer", "zero1_elements", "Bucket", "Span", "GradientSync", "gradient_sync", "active_sync",
           "BucketIssuer", "bucket_groups", "buckets", "schedule", "system_cost", "dtype_bytes", "DataParallelStep",
           "step_timeline", "backward_compute_s", "rank_spans", "op_spans", "chrome_trace"]
