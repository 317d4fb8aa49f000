"""Tensor parallelism as a transformation of the captured aten graph (Megatron-style, inference/prefill).

The model is captured once, whole (torch.export, as for one core). A pass over that graph then
propagates how every value is split across the TP ranks and rewrites the graph for one rank:

- a linear whose input is replicated is column-parallel: its weight (and bias) rows are split, its
  output is split on the last dim. When the output is viewed as [..., heads, head_dim] the split
  follows the heads; when it is split into equal sections (GPT-2's fused q|k|v) each section is split.
- grouped-query attention with fewer KV heads than ranks: the K/V projections are not split but each
  rank keeps the one KV head its query heads use: the K and V weights are replicated tp / kv_heads times,
  as NxD's GQAQKVColumnParallelLinear does with kv_size_multiplier = tp / kv_heads (its API guide: the
  K/V weights are replicated that many times so that the TP degree may exceed the KV heads, at the cost
  of memory; https://awsdocs-neuron.readthedocs-hosted.com/en/latest/libraries/neuronx-distributed/api_guide.html).
- a linear whose input is split on its last dim is row-parallel: its weight columns are split, each rank
  computes a partial sum, an all-reduce adds them (the bias is added once, after the all-reduce).
- an embedding looked up with token ids (values that depend on the inputs) is vocab-parallel: each rank
  holds a block of rows, looks up the ids that fall in its block (others give zeros), an all-reduce
  sums the ranks' rows. A tied lm_head uses the same rows block (column-parallel over the vocabulary).
- views, permutes, slices, element-wise ops and attention carry the split through (attention heads
  are split across ranks); any other op that meets a split value gets it all-gathered first, and the
  model's outputs are all-gathered (the logits: column-parallel lm_head + all-gather).
Megatron-LM: Shoeybi et al., https://arxiv.org/abs/1909.08053 (section 3).

All ranks run the same rewritten graph with different weights (their shards), so the graph is built
once and each rank's Program differs only in its state. Execution: `run_ranks` runs every rank on its
own simulated NeuronCore, node by node in lockstep. A collective node is a rendezvous, as in
trnlab.nki.collectives: every rank issues the collective's ISA instruction (trnlab.isa.cc.
CollectiveInstruction), which computes the rank's result from all ranks' sources with trnlab.isa.collectives'
semantics and occupies the rank's collective unit ("cc") and DMA queues on the same timeline as compute,
from the last rank's arrival (its input ready) for collective_cost(op, bytes, tp, system, launch="graph",
itemsize of the activations' dtype) (a node of a compiled graph: no host launch, as trnlab.plan costs
in-graph collectives). Later compute that
does not read its result overlaps it; DMA-heavy compute contends with it for the queues. The latency is
the co-simulated end of the slowest rank's timeline; `collectives_us` is the collective time on that
timeline's critical path (trnlab.timing.scheduler.critical_path: what each collective on the chain that
decides the end added after its predecessor), `collectives_total_us` their whole duration on the cc unit.
Timing-only runs simulate rank 0 alone (all TP ranks run the same instructions on same-shaped data, so
its own arrival is the latest; tests/test_torch_shard_timeline.py checks it gives the functional run's
timeline).
"""
from __future__ import annotations

import dataclasses
import math
import operator
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import torch
from torch.export.graph_signature import ExportGraphSignature, InputKind, InputSpec, TensorArgument

from trnlab.errors import OptionError, UnsupportedOperatorError
from trnlab.isa.collectives import collective_cost
from trnlab.torch import capture
from trnlab.torch.lowering import INDEX, lowers
from trnlab.torch.report import Report

aten = torch.ops.aten


# --- the collectives as graph nodes -----------------------------------------------------------------
def all_reduce(x: torch.Tensor, ranks: int) -> torch.Tensor:
    """Graph node: the sum over the TP ranks (on one rank's view: the value's shape is unchanged)."""
    return x.clone()


def all_gather(x: torch.Tensor, dim: int, ranks: int) -> torch.Tensor:
    """Graph node: the ranks' values concatenated in rank order along `dim`."""
    return torch.cat([x] * ranks, dim=dim)


def reduce_scatter(x: torch.Tensor, dim: int, ranks: int) -> torch.Tensor:
    """Graph node: block `rank` (along `dim`) of the sum over the ranks."""
    return x.narrow(dim, 0, x.shape[dim] // ranks).clone()


COLLECTIVES = {all_reduce: "all-reduce", all_gather: "all-gather", reduce_scatter: "reduce-scatter"}


@lowers(all_reduce, all_gather, reduce_scatter, dtypes=INDEX)
def _collective(ctx, node, x, *_):
    """Issue the collective's ISA instruction (trnlab.isa.cc.CollectiveInstruction) on this rank's machine:
    run_ranks' rendezvous built it for every rank at once (the ranks' sources, the latest arrival); its
    result is computed by the ISA layer and its time is on this rank's timeline."""
    staged = ctx.collectives.pop(node, None)
    if staged is None:
        from trnlab.errors import LoweringError
        raise LoweringError(f"{node.name} ({COLLECTIVES[node.target]}) is a collective of a tensor-parallel graph: "
                            "run it with trnlab.torch.shard.run_ranks (trnlab.torch.compile(..., tp=N)), which "
                            "meets the ranks at it")
    dst, instr = staged
    ctx.machine.issue(instr)
    return dst


# --- how a value is split ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """A value split on `dim`: rank r holds block r * groups // tp of `groups` equal blocks (groups == tp:
    a plain split; groups < tp: KV heads replicated across tp / groups ranks); with `sections` > 1 the dim
    is `sections` equal parts (fused q|k|v) each split that way."""
    dim: int
    groups: int
    sections: int = 1


@dataclass(frozen=True)
class WeightSlice:
    """How a state tensor is cut for each rank: along `dim`, as Shard describes. `padded` > 0: the dim is
    first padded with zeros to that size (a vocabulary not divisible by tp, as Megatron pads it)."""
    dim: int
    groups: int
    sections: int = 1
    padded: int = 0

    def take(self, value: torch.Tensor, rank: int, tp: int) -> torch.Tensor:
        size = value.shape[self.dim]
        if self.padded > size:
            shape = list(value.shape)
            shape[self.dim] = self.padded - size
            value = torch.cat([value, torch.zeros(shape, dtype=value.dtype, device=value.device)], dim=self.dim)
            size = self.padded
        part = size // self.sections
        block = part // self.groups
        b = rank * self.groups // tp
        pieces = [value.narrow(self.dim, s * part + b * block, block) for s in range(self.sections)]
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=self.dim)
        return out.contiguous() if not out.is_meta else out


@dataclass
class ShardPlan:
    """The rewritten graph (one rank's view) and what differs per rank (weights, vocab offsets)."""
    tp: int
    graph_module: torch.fx.GraphModule
    input_specs: list
    output_specs: list
    out_spec: object
    slices: dict                       # state target -> WeightSlice
    rank_constants: dict               # constant target -> rank -> tensor
    collectives: list                  # collective nodes of the graph, in order
    notes: list = field(default_factory=list)   # what was sharded how (for the report)
    input_slices: dict = field(default_factory=dict)   # user input name -> WeightSlice (KV caches)
    output_shards: dict = field(default_factory=dict)  # output index -> Shard, gathered on the host (caches)

    def state_for(self, ep, rank: int) -> tuple[dict, dict]:
        """(state_dict, constants) of one rank."""
        state = {k: (self.slices[k].take(v, rank, self.tp) if k in self.slices else v)
                 for k, v in ep.state_dict.items()}
        consts = {k: (self.slices[k].take(v, rank, self.tp) if k in self.slices else v)
                  for k, v in ep.constants.items()}
        for k, per_rank in self.rank_constants.items():
            consts[k] = per_rank[rank]
        return state, consts


@dataclass
class RankExport:
    """What trnlab.torch.executor.Program reads of an ExportedProgram, for one rank's shard."""
    graph_module: torch.fx.GraphModule
    graph_signature: ExportGraphSignature
    state_dict: dict
    constants: dict
    call_spec: object

    @property
    def graph(self):
        return self.graph_module.graph


@dataclass
class _CallSpec:
    out_spec: object


ELEMENTWISE = {aten.add, aten.sub, aten.mul, aten.div, aten.neg, aten.silu, aten.gelu, aten.relu, aten.sigmoid,
               aten.tanh, aten.exp, aten.clone, aten._to_copy, aten.pow, aten.rsqrt, aten.alias, aten.detach,
               aten.dropout, aten.where, aten.type_as, aten.reciprocal, aten.sqrt, aten.abs}
VIEWS = {aten.view, aten._unsafe_view, aten.reshape}


def _packet(node):
    return getattr(node.target, "overloadpacket", None)


def _shape(node) -> tuple:
    v = node.meta.get("val")
    return tuple(int(s) for s in v.shape) if isinstance(v, torch.Tensor) else ()


def _local(shape: tuple, spec: Optional[Shard]) -> list:
    out = list(shape)
    if spec is not None:
        out[spec.dim] //= spec.groups
    return out


class _Sharder:
    """One pass over the captured graph in order: copy each node into a new graph, rewriting the ones
    that touch split values (see the module docstring)."""

    def __init__(self, ep, tp: int, sequence_parallel: bool = False):
        self.ep, self.tp, self.sp = ep, tp, sequence_parallel
        self.old = ep.graph
        self.g = torch.fx.Graph()
        self.env: dict = {}          # old node -> new node
        self.spec: dict = {}         # new node -> Shard | list (split outputs) | None
        self.gshape: dict = {}       # new node -> global shape
        self.slices: dict = {}       # placeholder target -> WeightSlice
        self.rank_constants: dict = {}
        self.collectives: list = []
        self.notes: list = []
        sig = ep.graph_signature
        placeholders = [n for n in self.old.nodes if n.op == "placeholder"]
        self.target_of = {n: s.target for n, s in zip(placeholders, sig.input_specs)
                          if s.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)}
        self.params = {n for n, s in zip(placeholders, sig.input_specs) if s.kind == InputKind.PARAMETER}
        self.dynamic = {n for n, s in zip(placeholders, sig.input_specs) if s.kind == InputKind.USER_INPUT}
        self.input_specs = list(sig.input_specs)
        self.new_placeholders: list = []      # (node, InputSpec) added for per-rank constants
        self._consumer = ""
        self.gathered: dict = {}              # split value -> its all-gather node
        self.user_inputs = set(self.dynamic)
        self.input_slices: dict = {}
        self.output_shards: dict = {}
        self.first_call = None

    # --- helpers ---
    def _emit(self, target, args, kwargs=None, like=None, spec=None, gshape=None):
        n = self.g.call_function(target, tuple(args), dict(kwargs or {}))
        if like is not None and "stack_trace" in like.meta:
            n.meta["stack_trace"] = like.meta["stack_trace"]
        self.spec[n] = spec
        if gshape is not None:
            self.gshape[n] = tuple(gshape)
        return n

    def _slice(self, old_ph, ws: WeightSlice) -> None:
        target = self.target_of.get(old_ph)
        if target is None or old_ph not in self.params:
            raise UnsupportedOperatorError(f"tensor parallelism: {old_ph.name} is not a parameter; only "
                                           "parameters are split across ranks")
        prev = self.slices.get(target)
        if prev is not None and prev != ws:
            raise UnsupportedOperatorError(f"tensor parallelism: parameter {target} would be split two ways "
                                           f"({prev} and {ws}); trnlab splits each parameter one way")
        self.slices[target] = ws

    def _gather(self, new, old):
        """A split value all-gathered (replicated on every rank; once per value)."""
        spec = self.spec.get(new)
        if not isinstance(spec, Shard):
            return new
        if new in self.gathered:
            return self.gathered[new]
        if spec.groups != self.tp or spec.sections != 1:
            raise UnsupportedOperatorError(
                f"tensor parallelism: {old.name} ({old.target}) needs its whole input, which is split in a "
                f"layout an all-gather cannot rebuild (groups {spec.groups} of {self.tp} ranks, {spec.sections} "
                "sections)")
        n = self._emit(all_gather, (new, spec.dim, self.tp), like=old, spec=None, gshape=self.gshape[new])
        self.collectives.append(n)
        whole = _shape(old)
        if whole and self.gshape[new][spec.dim] != whole[spec.dim]:           # drop the padding
            n = self._emit(aten.slice.Tensor, (n, spec.dim, 0, whole[spec.dim]), like=old, spec=None, gshape=whole)
        self.notes.append(f"{old.name}: all-gathered for {self._consumer}")
        self.gathered[new] = n
        return n

    def _output(self, i: int, old):
        """A model output: all-gathered, except an updated KV cache, which stays on its ranks (the host
        assembles it for the caller; serving keeps it sharded between steps)."""
        if not isinstance(old, torch.fx.Node):
            return old
        new = self.env[old]
        spec = self.spec.get(new)
        if isinstance(spec, Shard) and new.target is aten.index_copy.default:
            self.output_shards[i] = spec
            return new
        return self._gather(new, old)

    def _index_copy(self, node):
        """index_copy(cache, dim, pos, new) with the new keys/values split by heads: the cache (a user input
        used only here) is split the same way, each rank holding the KV heads its query heads use."""
        x_old, dim, idx, src_old = node.args[:4]
        src_spec = self.spec.get(self.env[src_old])
        x_spec = self.spec.get(self.env[x_old])
        nd = len(_shape(node))
        if not isinstance(src_spec, Shard) or src_spec.sections != 1 or src_spec.dim == dim % nd:
            return None
        if isinstance(idx, torch.fx.Node) and self.spec.get(self.env[idx]) is not None:
            return None
        if x_spec is None:
            if x_old not in self.user_inputs or len(x_old.users) != 1:
                return None
            self.input_slices[x_old.name] = WeightSlice(src_spec.dim, src_spec.groups)
            self.spec[self.env[x_old]] = src_spec
            self.notes.append(f"{x_old.name}: input split like its new entries (KV cache, {src_spec.groups} "
                              "head groups)")
        elif x_spec != src_spec:
            return None
        return self._copy(node, src_spec)

    def _arg(self, a):
        return self.env[a] if isinstance(a, torch.fx.Node) else a

    # --- the pass ---
    def run(self) -> ShardPlan:
        for node in self.old.nodes:
            if node.op == "placeholder":
                n = self.g.placeholder(node.name)
                n.meta.update(node.meta)
                self.env[node] = n
                self.spec[n] = None
                self.gshape[n] = _shape(node)
            elif node.op == "output":
                self._consumer = "the model's outputs"
                outs = [self._output(i, o) for i, o in enumerate(node.args[0])]
                self.g.output(tuple(outs))
            elif node.op == "call_function":
                if any(d in self.dynamic for d in node.all_input_nodes):
                    self.dynamic.add(node)
                self.env[node] = self._call(node)
            else:
                raise UnsupportedOperatorError(f"tensor parallelism: graph node {node.op} {node.name}")
        return self._plan()

    def _call(self, node):
        p = _packet(node)
        specs = [self.spec.get(self.env[d]) for d in node.all_input_nodes]
        if p is aten.linear and node.args[1] in self.params:
            return self._linear(node)
        if p is aten.addmm and len(node.args) == 3 and node.args[2] in self.params:
            out = self._addmm(node)
            if out is not None:
                return out
        if p is aten.embedding and node.args[0] in self.params and node.args[1] in self.dynamic:
            return self._embedding(node)
        if p is aten.index_copy:
            out = self._index_copy(node)
            if out is not None:
                return out
        if all(s is None for s in specs):
            return self._copy(node, None)
        rule = {aten.permute: self._permute, aten.transpose: self._transpose, aten.split: self._split,
                aten.slice: self._keep_unless_dim, aten.unsqueeze: self._unsqueeze,
                aten.scaled_dot_product_attention: self._attention, aten.cat: self._cat,
                aten._scaled_dot_product_flash_attention_for_cpu: self._attention,
                aten.expand: self._expand, aten.mean: self._reduction, aten.sum: self._reduction,
                aten.amax: self._reduction, aten.layer_norm: self._layer_norm}.get(p)
        if p in VIEWS:
            rule = self._view
        elif p in ELEMENTWISE:
            rule = self._elementwise
        elif node.target is operator.getitem:
            rule = self._getitem
        elif p is aten._assert_tensor_metadata:
            rule = lambda n: self._copy(n, None)   # noqa: E731
        out = rule(node) if rule is not None else None
        return out if out is not None else self._fallback(node)

    def _copy(self, node, spec, args=None, kwargs=None):
        if args is None and kwargs is None:
            n = self.g.node_copy(node, self.env.__getitem__)
            self.spec[n] = spec
        else:
            n = self.g.call_function(node.target, tuple(args), dict(kwargs if kwargs is not None else node.kwargs))
            n.meta.update({k: v for k, v in node.meta.items() if k != "val"})
            self.spec[n] = spec
        v = node.meta.get("val")
        if isinstance(v, (list, tuple)):
            self.gshape[n] = [tuple(x.shape) if isinstance(x, torch.Tensor) else () for x in v]
        else:
            self.gshape[n] = _shape(node)
        return n

    def _fallback(self, node):
        """An op without a split rule: its split inputs are all-gathered first."""
        self._consumer = f"{node.name} ({node.target}, no split rule)"
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda a: self._gather(self.env[a], a))
        return self._copy(node, None, args, kwargs)

    # --- linears and embeddings ---
    def _linear(self, node):
        b_old = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        return self._matmul(node, node.args[0], node.args[1], b_old, 0)

    def _addmm(self, node):
        """addmm(bias, x, W[in, out]): GPT-2's Conv1D (transformers), the weight stored [in, out]."""
        if node.kwargs or len(node.args) != 3:
            return None
        return self._matmul(node, node.args[1], node.args[2], node.args[0], 1)

    def _matmul(self, node, x_old, w_old, b_old, w_out: int):
        """A linear layer y = x W^T (w_out=0: W [out, in]) or x W (w_out=1: W [in, out]) + bias."""
        x, spec = self.env[x_old], self.spec.get(self.env[x_old])
        out_shape = _shape(node)
        last = len(self.gshape[x]) - 1
        if isinstance(spec, Shard) and spec.dim != last and self.sp:
            self._consumer = f"{node.name} (sequence parallelism: the whole sequence into a column-parallel linear)"
            x, spec = self._gather(x, x_old), None
        if spec is None:
            args = tuple(x if a is x_old else self._arg(a) for a in node.args)
            layout = self._column_layout(node, _shape(w_old)[w_out])
            if layout is None:
                return self._copy(node, None, args)
            groups, sections, padded = layout
            self._slice(w_old, WeightSlice(w_out, groups, sections, padded))
            if b_old is not None:
                self._slice(b_old, WeightSlice(0, groups, sections, padded))
            self.notes.append(f"{w_old.name}: column-parallel ({_describe_layout(groups, sections, self.tp)}"
                              + (f", padded to {padded})" if padded else ")"))
            n = self._copy(node, Shard(len(out_shape) - 1, groups, sections), args)
            if padded:
                self.gshape[n] = (*out_shape[:-1], padded)
            return n
        if spec.dim != last or spec.groups != self.tp or spec.sections != 1:
            return self._fallback(node)
        width = self.gshape[x][-1]                    # the input's features (padded, after a padded split)
        pad = width if width != _shape(w_old)[1 - w_out] else 0
        self._slice(w_old, WeightSlice(1 - w_out, self.tp, 1, pad))
        mm = aten.linear.default if w_out == 0 else aten.mm.default
        n = self._emit(mm, (x, self.env[w_old]), like=node, spec=None, gshape=out_shape)
        red = self._sum_over_ranks(n, node, out_shape)
        self.notes.append(f"{w_old.name}: row-parallel + {COLLECTIVES[red.target]}")
        if b_old is not None:
            red = self._emit(aten.add.Tensor, (red, self.env[b_old]), like=node, spec=self.spec[red],
                             gshape=out_shape)
        return red

    def _column_layout(self, node, n_out: int) -> Optional[tuple]:
        """(groups, sections, padded size or 0) of a column-parallel linear's output features."""
        tp = self.tp
        users = list(node.users)
        while len(users) == 1 and _packet(users[0]) in VIEWS and _shape(users[0])[-1:] == (n_out,):
            users = list(users[0].users)          # [B*S, out] -> [B, S, out] (Conv1D's addmm)
        if len(users) == 1 and _packet(users[0]) is aten.split and users[0].args[1:2]:
            size = users[0].args[1]
            if isinstance(size, int) and n_out % size == 0 and n_out // size > 1:
                sections = n_out // size
                heads = {h for g in users[0].users for h in self._heads_of(g, size)}
                if size % tp == 0 and all(h % tp == 0 for h in heads):
                    return tp, sections, 0
                raise _indivisible("fused projection", node, size if not heads else min(heads), tp)
        heads = {h for u in users for h in self._heads_of(u, n_out)}
        if heads:
            h = min(heads)
            if h % tp == 0:
                return tp, 1, 0
            if tp % h == 0:
                return h, 1, 0        # GQA: fewer KV heads than ranks; each rank keeps the KV head it needs
            raise _indivisible("attention heads", node, h, tp)
        return (tp, 1, 0) if n_out % tp == 0 else (tp, 1, -(-n_out // tp) * tp)   # pad the features

    @staticmethod
    def _heads_of(user, features: int) -> list:
        """[heads] when `user` views the last dim (`features`) as [..., heads, head_dim]."""
        if _packet(user) in VIEWS:
            shape = list(_shape(user))         # the captured shape (a -1 in the view's argument resolved)
            if len(shape) >= 2 and shape[-2] * shape[-1] == features:
                return [int(shape[-2])]
        return []

    def _embedding(self, node):
        """Vocab-parallel embedding: rows [start, start + V/tp) on each rank, masked lookup, all-reduce."""
        w_old, ids_old = node.args[0], node.args[1]
        vocab, dim = _shape(w_old)
        rows = -(-vocab // self.tp)                   # a vocabulary not divisible by tp is padded
        self._slice(w_old, WeightSlice(0, self.tp, 1, rows * self.tp if vocab % self.tp else 0))
        self.notes.append(f"{w_old.name}: vocab-parallel embedding + all-reduce")
        device = self.ep.state_dict[self.target_of[w_old]].device     # meta for shapes-only models
        start = self._rank_constant(f"tp_vocab_start_{node.name}",
                                    [torch.tensor([r * rows], dtype=torch.int32, device=device)
                                     for r in range(self.tp)])
        ids = self.env[ids_old]
        ishape = _shape(ids_old)
        oshape = _shape(node)
        e = lambda t, a, k=None, s=ishape: self._emit(t, a, k, like=node, gshape=s)  # noqa: E731
        ids32 = e(aten._to_copy.default, (ids,), {"dtype": torch.int32})
        local = e(aten.sub.Tensor, (ids32, start))
        inside = e(aten.bitwise_and.Tensor, (e(aten.ge.Scalar, (local, 0)), e(aten.lt.Scalar, (local, rows))))
        clamped = e(aten.clamp.default, (local, 0, rows - 1))
        rows_out = e(aten.embedding.default, (self.env[w_old], clamped), s=oshape)
        dtype = node.meta["val"].dtype
        mask = e(aten._to_copy.default, (e(aten.unsqueeze.default, (inside, -1), s=ishape + (1,)),),
                 {"dtype": dtype}, s=ishape + (1,))
        part = e(aten.mul.Tensor, (rows_out, mask), s=oshape)
        return self._sum_over_ranks(part, node, oshape)

    def _sum_over_ranks(self, partial, node, shape):
        """The ranks' partial sums added: an all-reduce, or with sequence parallelism a reduce-scatter that
        leaves each rank its block of the sequence (dim -2 of [..., S, hidden])."""
        dim = len(shape) - 2
        if self.sp and dim >= 0 and shape[dim] % self.tp == 0:
            red = self._emit(reduce_scatter, (partial, dim, self.tp), like=node, spec=Shard(dim, self.tp),
                             gshape=shape)
        else:
            red = self._emit(all_reduce, (partial, self.tp), like=node, spec=None, gshape=shape)
        self.collectives.append(red)
        return red

    def _localize(self, new, dim: int, like):
        """A replicated value cut to this rank's block of `dim` (sequence parallelism: e.g. GPT-2's position
        embeddings against the sequence-split hidden states); no communication."""
        size = self.gshape[new][dim] // self.tp
        device = like.meta["val"].device
        idx = self._rank_constant(f"tp_seq_index_{like.name}_{new.name}",
                                  [torch.arange(r * size, (r + 1) * size, device=device) for r in range(self.tp)])
        shape = list(self.gshape[new])
        return self._emit(aten.index_select.default, (new, dim, idx), like=like, spec=Shard(dim, self.tp),
                          gshape=shape)

    def _rank_constant(self, name: str, values: list):
        with self.g.inserting_before(self._first_call()):
            n = self.g.placeholder(name)
        n.meta["val"] = values[0]
        self.spec[n] = None
        self.gshape[n] = tuple(values[0].shape)
        self.rank_constants[name] = values
        self.new_placeholders.append((n, InputSpec(kind=InputKind.CONSTANT_TENSOR, arg=TensorArgument(name=n.name),
                                                    target=name, persistent=None)))
        return n

    def _first_call(self):
        for n in self.g.nodes:
            if n.op != "placeholder":
                return n
        return None

    # --- split-carrying rules (None: no rule applies, fall back to an all-gather) ---
    def _view(self, node):
        x = self.env[node.args[0]]
        spec = self.spec[x]
        src, dst = self.gshape[x], tuple(int(s) for s in node.args[1])
        if -1 in dst:
            dst = _shape(node)
        j = _view_dim(src, dst, spec.dim, spec.groups)
        if j is None or spec.sections != 1 and dst[j] != src[spec.dim]:
            return None                      # fused sections stay whole only through views that keep the dim
        new = Shard(j, spec.groups, spec.sections)
        return self._copy(node, new, (x, _local(dst, new)))

    def _permute(self, node):
        x = self.env[node.args[0]]
        spec = self.spec[x]
        perm = [d % len(self.gshape[x]) for d in node.args[1]]
        return self._copy(node, dataclasses.replace(spec, dim=perm.index(spec.dim)))

    def _transpose(self, node):
        x = self.env[node.args[0]]
        spec = self.spec[x]
        nd = len(self.gshape[x])
        a, b = node.args[1] % nd, node.args[2] % nd
        dim = b if spec.dim == a else a if spec.dim == b else spec.dim
        return self._copy(node, dataclasses.replace(spec, dim=dim))

    def _expand(self, node):
        """expand keeps the split dim (repeat_kv: [B, KV, 1, S, D] -> [B, KV, G, S, D] on the local KV heads)."""
        x = self.env[node.args[0]]
        spec = self.spec[x]
        sizes = list(node.args[1])
        d = spec.dim + len(sizes) - len(self.gshape[x])
        if spec.sections != 1:
            return None
        if sizes[d] != -1:
            sizes[d] //= spec.groups
        return self._copy(node, dataclasses.replace(spec, dim=d), (x, sizes, *node.args[2:]))

    def _unsqueeze(self, node):
        x = self.env[node.args[0]]
        spec = self.spec[x]
        d = node.args[1] % (len(self.gshape[x]) + 1)
        return self._copy(node, dataclasses.replace(spec, dim=spec.dim + (d <= spec.dim)))

    def _keep_unless_dim(self, node):
        x = self.env[node.args[0]]
        spec = self.spec[x]
        dim = (node.args[1] if len(node.args) > 1 else 0) % len(self.gshape[x])
        return None if dim == spec.dim or spec.sections != 1 else self._copy(node, spec)

    def _split(self, node):
        x = self.env[node.args[0]]
        spec = self.spec[x]
        size = node.args[1]
        dim = (node.args[2] if len(node.args) > 2 else 0) % len(self.gshape[x])
        if not isinstance(size, int):
            return None
        pieces = len(_shape_list(node))
        if dim != spec.dim:
            return None if spec.sections != 1 else self._copy(node, [spec] * pieces)
        if spec.sections != pieces or size * pieces != self.gshape[x][dim]:
            return None
        piece = Shard(dim, spec.groups)
        return self._copy(node, [piece] * pieces, (x, size // spec.groups, *node.args[2:]))

    def _getitem(self, node):
        src = self.env[node.args[0]]
        specs = self.spec[src]
        if not isinstance(specs, list):
            return None
        return self._copy(node, specs[node.args[1]])

    def _cat(self, node):
        tensors = [self.env[t] for t in node.args[0]]
        specs = {self.spec[t] for t in tensors}
        dim = (node.args[1] if len(node.args) > 1 else 0) % len(_shape(node))
        if len(specs) != 1 or None in specs:
            return None
        spec = specs.pop()
        return None if spec.dim == dim or spec.sections != 1 else self._copy(node, spec)

    def _elementwise(self, node):
        out_nd = len(_shape(node))
        if not out_nd:
            return None
        want = None
        for a in node.all_input_nodes:
            new = self.env[a]
            spec = self.spec.get(new)
            shape = self.gshape.get(new, ())
            offset = out_nd - len(shape)
            if isinstance(spec, Shard):
                s = dataclasses.replace(spec, dim=spec.dim + offset)
                if want not in (None, s):
                    return None
                want = s
        if want is None:
            return None
        local = {}
        for a in node.all_input_nodes:
            new = self.env[a]
            shape = self.gshape.get(new, ())
            d = want.dim - (out_nd - len(shape))
            if self.spec.get(new) is None and 0 <= d < len(shape) and shape[d] != 1:
                if not (self.sp and want.groups == self.tp and want.sections == 1 and shape[d] % self.tp == 0):
                    return None          # a whole operand against a split one: gather instead
                local[a] = self._localize(new, d, node)
        if not local:
            return self._copy(node, want)
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda a: local.get(a, self.env[a]))
        return self._copy(node, want, args, kwargs)

    def _reduction(self, node):
        """mean/sum/amax over dims other than the split one (a norm's statistics over hidden)."""
        x = self.env[node.args[0]]
        spec = self.spec[x]
        nd = len(self.gshape[x])
        dims = node.args[1] if len(node.args) > 1 else None
        if dims is None or spec.sections != 1:
            return None
        dims = {d % nd for d in ([dims] if isinstance(dims, int) else dims)}
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if spec.dim in dims:
            return None
        shift = 0 if keep else sum(1 for d in dims if d < spec.dim)
        return self._copy(node, dataclasses.replace(spec, dim=spec.dim - shift))

    def _layer_norm(self, node):
        x = self.env[node.args[0]]
        spec = self.spec[x]
        normalized = len(node.args[1])
        if spec.sections != 1 or spec.dim >= len(self.gshape[x]) - normalized:
            return None
        if any(self.spec.get(self.env[a]) is not None for a in node.all_input_nodes[1:]):
            return None
        return self._copy(node, spec)

    def _attention(self, node):
        q, k, v = (self.env[a] for a in node.args[:3])
        specs = [self.spec[t] for t in (q, k, v)]
        flash = _packet(node) is aten._scaled_dot_product_flash_attention_for_cpu
        mask = None if flash else node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
        mask = node.kwargs.get("attn_mask") if flash else mask
        if isinstance(mask, torch.fx.Node):        # a mask shared by all heads ([B, 1, S, S]) applies as is
            m = self.env[mask]
            shape = self.gshape.get(m, ())
            if self.spec.get(m) is not None or len(shape) == 4 and shape[1] != 1:
                return None
            mask = None
        if mask is not None or any(not isinstance(s, Shard) or s.dim != 1 or s.sections != 1 for s in specs):
            return None
        if specs[0].groups != self.tp:
            return None
        if isinstance(node.meta.get("val"), (list, tuple)):         # (output, logsumexp): heads on dim 1
            return self._copy(node, [specs[0]] * len(node.meta["val"]))
        return self._copy(node, specs[0])

    # --- the result ---
    def _plan(self) -> ShardPlan:
        gm = torch.fx.GraphModule(torch.nn.Module(), self.g)
        placeholders = [n for n in self.g.nodes if n.op == "placeholder"]
        added = dict(self.new_placeholders)
        old_specs = iter(self.input_specs)
        specs = [added[n] if n in added else next(old_specs) for n in placeholders]
        sig = self.ep.graph_signature
        return ShardPlan(self.tp, gm, specs, list(sig.output_specs), self.ep.call_spec.out_spec, self.slices,
                         self.rank_constants, self.collectives, self.notes, self.input_slices, self.output_shards)


def _shape_list(node) -> list:
    v = node.meta.get("val")
    return list(v) if isinstance(v, (list, tuple)) else []


def _describe_layout(groups: int, sections: int, tp: int) -> str:
    if groups < tp:
        return f"{groups} KV heads replicated over {tp} ranks"
    return f"{sections} sections, each split" if sections > 1 else "output features split"


def _indivisible(what: str, node, count: int, tp: int):
    return OptionError(f"tp={tp} does not divide the {count} {what} of {node.name} ({node.target}) "
                       f"and is not a multiple of it; choose a tp that divides {count}")


def _view_dim(src: tuple, dst: tuple, d: int, groups: int) -> Optional[int]:
    """The dim of `dst` that carries dim d of `src` (split into `groups` blocks) through a view: the
    outermost dst dim of d's span (a split [H*D] -> [H, D]) or the dst dim d's span starts (a merge
    [H, D] -> [H*D], d outermost); None when the blocks would not stay contiguous."""
    pre_src = math.prod(src[:d])
    if src[d] == 1:
        return None
    acc = 1
    for j, s in enumerate(dst):
        if acc == pre_src and s != 1:
            if s % groups:
                return None
            if s >= src[d]:
                return j if s % src[d] == 0 or s == src[d] else None
            # a split of src[d] over dst[j], dst[j+1], ...: the outer factor carries the blocks
            span, k = s, j
            while span < src[d] and k + 1 < len(dst):
                k += 1
                span *= dst[k]
            return j if span == src[d] else None
        acc *= s
        if acc > pre_src:
            return None
    return None


# --- building the plan and each rank's program ----------------------------------------------------
def shard(ep, tp: int, sequence_parallel: bool = False) -> ShardPlan:
    """The tensor-parallel rewrite of a captured model (an ExportedProgram from trnlab.torch.capture).

    sequence_parallel: Megatron's sequence parallelism (Korthikanti et al., https://arxiv.org/abs/2205.05198,
    section 4.2.2): the partial sums of row-parallel linears and of the vocab-parallel embedding are
    reduce-scattered over the sequence instead of all-reduced, norms and residual adds run on each rank's
    block of the sequence, and the sequence is all-gathered into the next column-parallel linear."""
    positive_int("tp", tp)
    plan = _Sharder(ep, tp, sequence_parallel).run()
    _propagate_meta(plan, ep)
    return plan


def rank_export(plan: ShardPlan, ep, rank: int) -> RankExport:
    state, consts = plan.state_for(ep, rank)
    sig = ExportGraphSignature(input_specs=plan.input_specs, output_specs=plan.output_specs)
    return RankExport(plan.graph_module, sig, state, consts, _CallSpec(plan.out_spec))


def _propagate_meta(plan: ShardPlan, ep) -> None:
    """Every node's meta['val'] as one rank sees it (rank 0's shapes; all ranks' are the same)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    state, consts = plan.state_for(ep, 0)
    by_target = {**state, **consts}
    specs = dict(zip([n for n in plan.graph_module.graph.nodes if n.op == "placeholder"], plan.input_specs))
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        env = {}
        for n in plan.graph_module.graph.nodes:
            if n.op == "placeholder":
                spec = specs[n]
                if spec.kind == InputKind.USER_INPUT:
                    v = n.meta["val"]
                    shape = list(v.shape) if isinstance(v, torch.Tensor) else []
                    cut = plan.input_slices.get(n.name)
                    if cut is not None:
                        shape[cut.dim] //= cut.groups
                    value = torch.empty(shape, dtype=v.dtype, device=v.device.type) \
                        if isinstance(v, torch.Tensor) else v
                else:
                    value = by_target[spec.target]
                env[n] = mode.from_tensor(value) if isinstance(value, torch.Tensor) else value
                n.meta["val"] = env[n]
            elif n.op == "call_function":
                args, kwargs = torch.fx.node.map_arg((n.args, n.kwargs), env.__getitem__)
                try:
                    env[n] = n.target(*args, **kwargs)
                except (RuntimeError, ValueError):
                    if _packet(n) not in VIEWS:
                        raise
                    # a view of a value whose strides differ from the captured one (a collective's result
                    # is contiguous): the device lowers views by shape, so the reshaped value is its meta
                    env[n] = aten.reshape.default(*args, **kwargs)
                n.meta["val"] = env[n]


# --- the fit across ranks --------------------------------------------------------------------------
def rank_program(plan: ShardPlan, ep, rank: int, *, name: str, fallback=None):
    from trnlab.torch.executor import Program
    return Program(rank_export(plan, ep, rank), name=name, fallback=fallback)


def rank_bytes(program) -> tuple[int, int]:
    """(weights, peak activations) one rank holds in HBM."""
    return program.weight_bytes(), program.activation_peak_bytes()


def smallest_tp(ep, capacity: int, *, name: str, max_tp: int, fallback=None, known: Optional[dict] = None) -> tuple:
    """(tp, weights, activations) of the smallest TP degree whose per-rank weights + peak activations fit
    `capacity` bytes (None when no TP up to max_tp fits). `known` holds tp -> (weights, activations) already
    measured. TP degrees the model cannot be split into (heads not divisible) are skipped."""
    known = dict(known or {})
    for t in range(1, max_tp + 1):
        if t not in known:
            try:
                if t == 1:
                    from trnlab.torch.executor import Program
                    known[t] = rank_bytes(Program(ep, name=name, fallback=fallback))
                else:
                    known[t] = rank_bytes(rank_program(shard(ep, t), ep, 0, name=name, fallback=fallback))
            except (OptionError, UnsupportedOperatorError):
                continue
        w, a = known[t]
        if w + a <= capacity:
            return t, w, a
    return None, 0, 0


# --- running the ranks ------------------------------------------------------------------------------
@dataclass
class RankRun:
    """One tensor-parallel run: each simulated rank's RunResult, its collectives and its timeline."""
    runs: list                     # RunResult per simulated rank (one in timing-only mode)
    outputs: object                # rank 0's outputs (the all-gathered model outputs)
    collectives: list              # dicts: node, op, bytes, latency_s, algorithm, start_s, end_s (rank 0)
    end_s: list                    # per simulated rank: the end of its timeline
    exposed_s: list                # per simulated rank: collective time on its critical path
    wall_s: float

    @property
    def latency_s(self) -> float:
        return max(self.end_s)

    @property
    def slowest(self) -> int:
        return max(range(len(self.end_s)), key=self.end_s.__getitem__)

    @property
    def collectives_s(self) -> float:
        """Collective time on the slowest rank's critical path (what overlapping compute did not hide)."""
        return self.exposed_s[self.slowest]

    @property
    def collectives_total_s(self) -> float:
        """Rank 0's collective unit busy time: every collective's duration, overlapped or not."""
        from trnlab.isa.cc import CC_UNIT
        return self.runs[0].machine.scheduler.busy[CC_UNIT]

    @property
    def compute_s(self) -> list:
        """Per simulated rank: its end minus the collective time on its critical path."""
        return [e - x for e, x in zip(self.end_s, self.exposed_s)]


def exposed_collective_s(scheduler) -> float:
    """Seconds the collectives add along the scheduler's critical path (trnlab.timing.scheduler): each
    collective on the chain that decides the end time counts for what it added after its predecessor."""
    from trnlab.isa.cc import CollectiveInstruction
    opcode = CollectiveInstruction.opcode
    return sum(added for i, added in scheduler.critical_path() if scheduler.sites[i][0] == opcode)


def _isa_collective(node):
    from trnlab.isa import collectives as cc
    if node.target is all_reduce:
        return cc.AllReduce(op="add")
    if node.target is reduce_scatter:
        return cc.ReduceScatter(op="add", axis=int(node.args[1]))
    return cc.AllGather(axis=int(node.args[1]))


def _graph_cost(op: str, nbytes: int, tp: int, system, itemsize: int):
    """collective_cost of a collective node of a compiled graph (None on one rank); a reduction costs per
    element of the activations' dtype (8-byte integers priced as fp32 elements)."""
    if tp < 2:
        return None
    return collective_cost(op, nbytes, tp, system, itemsize=itemsize if itemsize in (1, 2, 4) else 4,
                           launch="graph")


def _rendezvous(node, ctxs, machines, tp: int, system) -> dict:
    """Stage the collective node's instruction on every simulated rank (run in lockstep, every rank has
    issued the nodes before it), as trnlab.nki.collectives does at a rendezvous: each rank's source values
    and arrival (its input ready, its collective unit free); the collective starts at the latest arrival
    and ends with the slowest rank's part. It is a node of a compiled graph: collective_cost(...,
    launch="graph"), as trnlab.plan costs in-graph collectives. With one simulated rank (timing-only, the
    ranks symmetric) the latest arrival is rank 0's own. Returns the collective's row (rank 0's timeline)."""
    from trnlab.core import dtypes as dt
    from trnlab.core.machine import running
    from trnlab.isa.cc import CollectiveInstruction, queue_bytes
    from trnlab.torch.executor import device_dtype
    collective = _isa_collective(node)
    op, val = collective.name, node.meta["val"]
    staged = []
    for r, (ctx, m) in enumerate(zip(ctxs, machines)):
        with running(m):
            src = ctx.value(node.args[0])
            dst = ctx.alloc(val.shape, device_dtype(val.dtype), node.name)
            instr = CollectiveInstruction(api=f"trnlab.torch.shard.{node.target.__name__}",
                                          loc=capture.source_line(node), collective=collective, srcs=(src,),
                                          dsts=(dst,), position=r, ranks=tp)
            instr.validate(m.chip)
            staged.append(_Staged(dst, instr, m.scheduler.ready_at(instr), instr.sources() if ctx.numerics else ()))
    src, dst = staged[0].instr.srcs[0], staged[0].dst
    nbytes = int(dst.nbytes if op == "all-gather" else src.nbytes)    # nccom-test's size: AG output
    cost = _graph_cost(op, nbytes, tp, system, dt.itemsize(src.dtype))
    seconds = cost.latency_s if cost is not None else 0.0
    # every rank's source values, when every rank is simulated with numerics (timing-only: no values)
    inputs = ((tuple(s.sources[0] for s in staged),) if len(staged) == tp and staged[0].sources else ())
    not_before = max(s.arrival for s in staged)
    ready = [dataclasses.replace(s.instr, inputs=inputs, seconds=seconds, not_before=not_before,
                                 queue_bytes=queue_bytes(op, nbytes, tp)) for s in staged]
    ends = [m.scheduler.collective_end(instr) for m, instr in zip(machines, ready)]
    for ctx, s, instr in zip(ctxs, staged, ready):
        ctx.collectives[node] = (s.dst, dataclasses.replace(instr, min_end=max(ends)))
    return {"node": node.name, "op": op, "bytes": nbytes, "latency_s": seconds,
            "algorithm": cost.algorithm if cost is not None else "none",
            "start_s": max(staged[0].arrival, not_before), "end_s": max(ends)}


class _Staged(NamedTuple):
    """One rank's part of a collective node at the rendezvous."""
    dst: object                    # its result tensor
    instr: object                  # its CollectiveInstruction, before the ranks have met
    arrival: float                 # when it could start on this rank (input ready, collective unit free)
    sources: tuple                 # its source values (numerics), else ()


def run_ranks(programs: list, plan: ShardPlan, flat_inputs: list, *, chip, system, numerics: bool,
              trace: bool = True, progress=None) -> RankRun:
    """Run every program (one per rank) on its own simulated NeuronCore, in lockstep node by node; at each
    collective node the ranks meet and every rank issues the collective's ISA instruction (_rendezvous):
    its values from trnlab.isa.collectives' semantics, its time on the rank's collective unit and DMA
    queues, overlapping whatever later compute does not depend on it."""
    from torch.utils import _pytree as pytree

    from trnlab.core.machine import Machine, running
    from trnlab.hw import graph_chip
    from trnlab.nki.tensor import NkiTensor
    from trnlab.runtime import timing_model
    from trnlab.torch.blas import blas_threads
    from trnlab.torch.executor import RunResult, _Ctx
    t0 = time.perf_counter()
    machines = [Machine(graph_chip(chip), numerics=numerics, scheduler=timing_model(True, trace and r == 0),
                        tensor_class=NkiTensor) for r in range(len(programs))]
    ctxs = [_Ctx(p, m, numerics) for p, m in zip(programs, machines)]
    records = [[] for _ in programs]
    rows = []
    lead = programs[0]
    device = set(lead.device_nodes())
    with blas_threads(1):
        for r, (p, m, ctx) in enumerate(zip(programs, machines, ctxs)):
            with running(m):
                p._place_state(ctx)
                for node, value in zip(p.info.user_inputs, flat_inputs):
                    if isinstance(value, torch.Tensor):
                        value = value.to(node.meta["val"].dtype)
                        cut = plan.input_slices.get(node.name)
                        value = cut.take(value, r, plan.tp) if cut is not None else value
                    ctx.env[node] = ctx.bind(value, node.name)
        for node in lead.graph.nodes:
            if node.op != "call_function" or node not in device:
                continue
            if node.target in COLLECTIVES:
                rows.append(_rendezvous(node, ctxs, machines, plan.tp, system))
            for r, (p, m, ctx) in enumerate(zip(programs, machines, ctxs)):
                with running(m):
                    records[r].append(p._run_node(ctx, node))
            if progress is not None:
                progress()
        per_rank = []
        for p, m, ctx in zip(programs if plan.output_shards else programs[:1], machines, ctxs):
            with running(m):
                per_rank.append([None if n is None else p._to_host(ctx, n) for n in p.info.outputs])
        outputs = _assemble(per_rank, plan)
    wall = time.perf_counter() - t0
    runs = [RunResult(pytree.tree_unflatten(outputs, lead.info.out_spec) if r == 0 else None, records[r],
                      m.scheduler.end, m, wall, [x for x in records[r] if x.where == "cpu-fallback"], p)
            for r, (p, m) in enumerate(zip(programs, machines))]
    return RankRun(runs, runs[0].outputs, rows, [m.scheduler.end for m in machines],
                   [exposed_collective_s(m.scheduler) for m in machines], wall)


def _assemble(per_rank: list, plan: ShardPlan) -> list:
    """Rank 0's outputs, with the outputs that stay split (KV caches) put together from the ranks holding
    each block (on the host: no collective)."""
    outputs = list(per_rank[0])
    for i, spec in plan.output_shards.items():
        local = outputs[i]
        if local.is_meta or len(per_rank) == 1:
            shape = list(local.shape)
            shape[spec.dim] *= spec.groups
            outputs[i] = torch.empty(shape, dtype=local.dtype, device="meta")
            continue
        owners = sorted({r * spec.groups // plan.tp: r for r in reversed(range(plan.tp))}.items())
        outputs[i] = torch.cat([per_rank[r][i] for _, r in owners], dim=spec.dim)
    return outputs


# --- trnlab.torch.compile(..., tp=N): the sharded model and its report -------------------------------
DEFAULT_SYSTEMS = {"trn1": "trn1.32xlarge", "trn2": "trn2.48xlarge-lnc1", "trn3": "trn3-ultraserver"}


def resolve_system(system, target):
    """The system the ranks run on: `system` (a name or SystemSpec), else the instance of the target chip
    with one rank per physical NeuronCore (what one simulated core is): trn1.32xlarge, trn2.48xlarge-lnc1,
    trn3-ultraserver."""
    from trnlab.hw import get_chip
    from trnlab.hw.systems import get_system
    if system is None:
        return get_system(DEFAULT_SYSTEMS.get(get_chip(target).name, "trn2.48xlarge-lnc1"))
    spec = get_system(system)
    if target is not None and get_chip(target).name != spec.chip.name:
        raise OptionError(f"target={target!r} is a {get_chip(target).name} chip but system {spec.name} has "
                          f"{spec.chip.name} chips; give one of them")
    return spec


def positive_int(name: str, value) -> int:
    """value, an int >= 1 (not a bool), or OptionError naming `name`: the one check of a tp/dp count."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OptionError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_tp(tp, system) -> int:
    """tp as an int within the system's ranks, or OptionError naming the limit."""
    positive_int("tp", tp)
    if tp > system.ranks:
        raise OptionError(f"tp={tp} exceeds the {system.ranks} ranks of {system.name}")
    return tp


@dataclass
class ShardedReport(Report):
    """A Report of a tensor-parallel run. latency_s = the slowest rank's timeline end (compute and
    collectives co-simulated); collectives_us = the collective time on that rank's critical path (what
    compute did not hide), collectives_total_us = the collectives' whole duration on the collective unit;
    rank_compute_us = each rank's end minus its critical-path collective time, rank_latency_us = its end;
    model_flops and peak_flops are over all ranks; weights/activations/HBM are per rank."""
    tp: int = 1
    ranks: int = 1
    system: str = ""
    simulated_ranks: int = 1
    collectives_us: float = 0.0
    collectives_total_us: float = 0.0
    rank_compute_us: list = field(default_factory=list)
    rank_latency_us: list = field(default_factory=list)
    collectives: list = field(default_factory=list)
    hbm_per_rank_bytes: int = 0
    min_tp: Optional[int] = None
    sequence_parallel: bool = False
    lnc: int = 1                        # physical NeuronCores per rank on the system
    sharding: list = field(default_factory=list)

    @property
    def usd_per_million_tokens(self) -> float:
        """tp NeuronCores for the time it takes: ($/h / cores per instance) x tp, per token."""
        return Report.usd_per_million_tokens.fget(self) * self.tp

    def print(self, console=None, top: int = 15) -> None:
        from rich.console import Console
        from trnlab.console import natural_width
        from trnlab.torch.report import numerics_table, op_table
        console = console or Console()
        tables = [op_table(self, top), tp_table(self)] + ([numerics_table(self)] if self.numerics else [])
        with natural_width(console, tables):
            for t in tables:
                console.print(t)


def tp_table(r: ShardedReport):
    from rich.table import Table
    from trnlab.torch.report import fmt_bytes, fmt_time, fmt_usd
    t = Table(title=f"Tensor parallelism: {r.tp} ranks on {r.system}"
                    + (" with sequence parallelism" if r.sequence_parallel else ""), show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    compute = max(r.rank_compute_us, default=0.0) * 1e-6
    by_op: dict = {}
    for c in r.collectives:
        g = by_op.setdefault((c["op"], c["bytes"], c["algorithm"]), [0, 0.0])
        g[0] += 1
        g[1] += c["latency_s"]
    coll = "; ".join(f"{n} x {op} of {fmt_bytes(b)} ({alg}) = {fmt_time(s)}"
                     for (op, b, alg), (n, s) in by_op.items())
    hidden = max(r.collectives_total_us - r.collectives_us, 0.0) * 1e-6
    rows = [("predicted latency", f"{fmt_time(r.latency_s)} = rank compute {fmt_time(compute)} + collectives on "
                                  f"the critical path {fmt_time(r.collectives_us * 1e-6)} ({r.phase}, {r.tokens} "
                                  "tokens; co-simulated on each rank's timeline)"),
            ("collectives", (coll + f"; {fmt_time(hidden)} of them overlapped by compute") if coll else "none"),
            *([("decode", f"{fmt_time(r.decode.latency_s)} per step ({r.decode.tokens} tokens/step, collectives "
                          f"{fmt_time(r.decode.collectives_us * 1e-6)}) = {r.decode.tokens_per_s:,.0f} tokens/s, "
                          f"MFU {r.decode.mfu:.2%}")] if r.decode is not None else []),
            ("ranks", f"{r.tp} ({r.simulated_ranks} simulated; "
                      + ("all ranks run the same instructions)" if r.simulated_ranks < r.tp
                         else "in lockstep, meeting at each collective)")),
            ("throughput", f"{r.tokens_per_s:,.0f} tokens/s on {r.tp} NeuronCores"),
            ("MFU", f"{r.mfu:.1%} (model FLOPs {r.model_flops / 1e9:.2f} G over {r.tp} ranks)"),
            ("HBM per rank", f"weights {fmt_bytes(r.weights_bytes)} + peak activations "
                             f"{fmt_bytes(r.activation_peak_bytes)} of {fmt_bytes(r.hbm_capacity_bytes)}"
                             + (f"; smallest TP that fits: {r.min_tp}" if r.min_tp else "")),
            ("cost", f"{fmt_usd(r.usd_per_million_tokens)} per million tokens ({r.tp} of {r.instance_cores} "
                     f"NeuronCores of {r.instance} ${r.usd_per_hour:.2f}/h)"),
            ("instructions", f"{r.instructions:,} per rank"),
            *([("note", f"a rank of {r.system} is a logical NeuronCore of {r.lnc} physical cores; its compute is "
                        "simulated on one physical core (an upper bound)")] if r.lnc > 1 else []),
            ("simulation", f"compile {r.compile_s:.1f} s, run {r.wall_s:.1f} s wall")]
    for k, v in rows:
        t.add_row(k, v)
    return t


class ShardedModel:
    """A model compiled for `tp` NeuronCores (tensor parallelism); called like the model, every call runs
    the ranks (numerics: all of them, checked against eager; timing-only: rank 0) and refreshes `.report`."""

    def __init__(self, model, example_inputs, *, tp: int, system=None, target=None, dtype=torch.bfloat16,
                 fallback=None, numerics: bool = True, check: bool = True, name: Optional[str] = None,
                 tokens: Optional[int] = None, phase: str = "prefill", example_kwargs: Optional[dict] = None,
                 trace: bool = True, run_example: bool = True, sequence_parallel: bool = False):
        from trnlab.torch import api
        api._check_values(fallback, numerics, check)
        self.model = model
        self.system = resolve_system(system, target)
        self.chip = self.system.chip
        self.tp = check_tp(tp, self.system)
        self.dtype = api.as_dtype(dtype)
        api.check_compile_dtype(self.dtype)
        self.fallback, self.numerics, self.check = fallback, numerics, check and numerics
        self.name = name or type(model).__name__
        self.tokens, self.phase, self.trace = tokens, phase, trace
        if isinstance(example_inputs, torch.Tensor):
            example_inputs = (example_inputs,)
        self.args, self.kwargs = tuple(example_inputs), dict(example_kwargs or {})
        t0 = time.perf_counter()
        self.ep = capture.export(model, self.args, self.dtype, self.kwargs)
        self.sequence_parallel = bool(sequence_parallel)
        self.plan = shard(self.ep, self.tp, self.sequence_parallel) if self.tp > 1 else None
        n_programs = self.tp if numerics else 1
        self.programs = [self._program(r) for r in range(n_programs)]
        self.capacity = self.system.hbm_bytes_per_rank
        self.weights, self.activations = rank_bytes(self.programs[0])
        self.min_tp = self._min_tp()
        self._check_hbm()
        self.out_dtypes = api.eager_dtypes(model, self.args, self.kwargs)
        self.compile_s = time.perf_counter() - t0
        self.report: Optional[ShardedReport] = None
        self.last_run: Optional[RankRun] = None
        if run_example:
            self.run()

    def _program(self, rank: int):
        from trnlab.torch.executor import Program
        if self.plan is None:
            return Program(self.ep, name=self.name, fallback=self.fallback)
        return rank_program(self.plan, self.ep, rank, name=self.name, fallback=self.fallback)

    def _min_tp(self) -> Optional[int]:
        if self.weights + self.activations <= self.capacity and self.tp == 1:
            return 1
        known = {self.tp: (self.weights, self.activations)}
        return smallest_tp(self.ep, self.capacity, name=self.name, max_tp=min(self.system.ranks, 128),
                           fallback=self.fallback, known=known)[0]

    def _check_hbm(self) -> None:
        from trnlab.errors import HbmCapacityError
        from trnlab.torch.report import fmt_bytes
        need = self.weights + self.activations
        if need > self.capacity:
            hint = (f"; the smallest TP that fits is {self.min_tp}" if self.min_tp else
                    f"; no TP up to {min(self.system.ranks, 128)} fits")
            raise HbmCapacityError(
                f"{self.name} at tp={self.tp} does not fit one rank of {self.system.name}: weights "
                f"{fmt_bytes(self.weights)} + peak activations {fmt_bytes(self.activations)} = {need} B > "
                f"{fmt_bytes(self.capacity)} ({self.capacity} B) per rank{hint}", required=need, limit=self.capacity)

    def __iter__(self):
        return iter((self, self.report))

    def __call__(self, *inputs, progress=None, **kwargs):
        return self.run(inputs or self.args, kwargs if inputs else self.kwargs, progress=progress)

    def run(self, args=None, kwargs=None, progress=None):
        from torch.utils import _pytree as pytree

        from trnlab.torch import api
        args = self.args if args is None else tuple(args)
        kwargs = self.kwargs if kwargs is None else dict(kwargs)
        if api.input_signature(args, kwargs) != api.input_signature(self.args, self.kwargs):
            from trnlab.errors import ModelInputError
            raise ModelInputError(f"{self.name}: a tensor-parallel model runs the shapes it was compiled for; "
                                  "compile again for new shapes")
        flat = pytree.tree_flatten((args, kwargs))[0]
        plan = self.plan or _no_plan(self.tp)
        rr = run_ranks(self.programs, plan, flat, chip=self.chip, system=self.system, numerics=self.numerics,
                       trace=self.trace, progress=progress)
        rr.outputs = api.cast_outputs(rr.outputs, self.out_dtypes)
        self.last_run = rr
        self.report = self._report(rr, args, kwargs)
        return rr.outputs

    def _report(self, rr: RankRun, args, kwargs) -> ShardedReport:
        from trnlab.torch import api
        run0 = rr.runs[0]
        run0.outputs = rr.outputs
        base = api.run_report(run0, self.programs[0], self.chip, self.dtype, name=self.name,
                              tokens=self.tokens or api.count_tokens((args, kwargs)), phase=self.phase,
                              numerics=self.numerics, compile_s=self.compile_s)
        fields_ = {f.name: getattr(base, f.name) for f in dataclasses.fields(Report)}
        s = self.system
        fields_.update(latency_s=rr.latency_s, model_flops=base.model_flops * self.tp,
                       hw_flops=base.hw_flops * self.tp, peak_flops=base.peak_flops * self.tp,
                       hbm_capacity_bytes=self.capacity, usd_per_hour=s.usd_per_hour, instance=s.name,
                       instance_cores=s.ranks_per_instance, price_source=s.price_source or base.price_source,
                       wall_s=rr.wall_s)
        rep = ShardedReport(**fields_, tp=self.tp, ranks=self.tp, system=s.name, simulated_ranks=len(rr.runs),
                            collectives_us=rr.collectives_s * 1e6,
                            collectives_total_us=rr.collectives_total_s * 1e6,
                            rank_compute_us=[c * 1e6 for c in _per_rank(rr.compute_s, self.tp)],
                            rank_latency_us=[e * 1e6 for e in _per_rank(rr.end_s, self.tp)],
                            collectives=rr.collectives, hbm_per_rank_bytes=self.weights + self.activations,
                            min_tp=self.min_tp, sequence_parallel=self.sequence_parallel, lnc=s.lnc,
                            sharding=list(self.plan.notes) if self.plan else [])
        if self.check:
            rep.numerics = api.compare(self.model, args, rr.outputs, api.dtype_name(self.dtype), kwargs)
        return rep


def _per_rank(values: list, tp: int) -> list:
    """Every rank's value (timing-only: rank 0's for all, the ranks being identical)."""
    return list(values) if len(values) == tp else [values[0]] * tp


def _no_plan(tp: int) -> ShardPlan:
    return ShardPlan(tp, None, [], [], None, {}, {}, [], [], {}, {})

