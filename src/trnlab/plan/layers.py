"""One rank's shard of one decoder layer, simulated timing-only on the chip, cached.

Tensor parallelism as Megatron / NeuronX Distributed shard a layer (https://arxiv.org/abs/1909.08053;
NxD GQA: https://awsdocs-neuron.readthedocs-hosted.com/en/latest/libraries/neuronx-distributed/api_guide.html,
GQAQKVColumnParallelLinear replicates the KV heads when there are fewer of them than TP ranks): a rank holds
heads/TP query heads, kv_heads/TP key/value heads (one, replicated, when kv_heads < TP), FFN/TP columns and
the whole hidden size; the attention output and MLP-down projections produce partial sums the planner
all-reduces (trnlab.plan.train). The LM head is vocabulary-parallel (vocab/TP columns per rank).

Every timing comes from running the shard's captured graphs on the simulated NeuronCore (numerics off):
training = forward, backward and AdamW through trnlab.torch.train.compile_train and trnlab.torch.optim;
inference = prefill of the prompt and one decode step against a static KV cache through
trnlab.torch.api.CompiledModel. Results are cached by (what, shapes, dtype, checkpointing, target, compiler
switches) in memory and on disk ($TRNLAB_PLAN_CACHE, default ~/.cache/trnlab/plan), so a layer shape is
simulated once across layers, plans and processes.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trnlab.errors import OptionError
from trnlab.plan.configs import ModelSpec

CACHE_VERSION = 16         # bump when the simulated graphs or their costs change (4: element-wise fusion;
                           # 5: GEMM transposes on the Tensor engine; 6: multi-output and reduction fusion;
                           # 7: in-graph decode changes; 8: weight-gradient time, long-sequence attention;
                           # 9: wide-row reductions unfused; 10: attention frees its tiles;
                           # 11: middle-dim reductions as slices, short outer dims off the partitions;
                           # 12: sequence-parallel gathers saved as shards; 13: streamed decode attention;
                           # 14: graph_dma_efficiency; 15: sequence-parallel gathers free on the device;
                           # 16: spill model (reload addresses, victims, SpillCopy rate), trn2 Vector refit)


@dataclass(frozen=True)
class ShardSpec:
    """The shapes of one rank's shard of a decoder layer."""
    kind: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int           # vocab columns of the LM head on this rank
    sp: int = 1          # sequence parallelism over this many ranks (1: off)

    def layer_params(self) -> int:
        h, d, i = self.hidden, self.head_dim, self.intermediate
        q, kv = self.heads * d, self.kv_heads * d
        attn = h * q + 2 * h * kv + q * h
        if self.kind == "llama":
            return attn + 3 * h * i + 2 * h
        return attn + (q + 2 * kv + h) + 2 * h * i + i + h + 4 * h


def tp_problems(spec: ModelSpec, tp: int) -> list[str]:
    """Why `spec` cannot be split over `tp` ranks (empty when it can)."""
    out = []
    if spec.heads % tp:
        out.append(f"TP {tp} does not divide the {spec.heads} attention heads")
    if spec.kv_heads >= tp and spec.kv_heads % tp:
        out.append(f"TP {tp} does not divide the {spec.kv_heads} KV heads")
    if spec.kv_heads < tp and tp % spec.kv_heads:
        out.append(f"the {spec.kv_heads} KV heads cannot be replicated evenly over TP {tp}")
    if spec.intermediate % tp:
        out.append(f"TP {tp} does not divide the FFN size {spec.intermediate}")
    return out


def shard(spec: ModelSpec, tp: int, *, sequence_parallel: bool = False, pad: bool = False) -> ShardSpec:
    """One rank's shapes. pad=True rounds heads and FFN up to a multiple of TP (transformers-neuronx pads
    the heads it cannot split) instead of refusing."""
    problems = [] if pad else tp_problems(spec, tp)
    if problems:
        raise OptionError(f"{spec.name}: " + "; ".join(problems))
    return ShardSpec(kind=spec.kind, hidden=spec.hidden, heads=-(-spec.heads // tp),
                     kv_heads=max(1, -(-spec.kv_heads // tp)), head_dim=spec.head_dim,
                     intermediate=-(-spec.intermediate // tp), vocab=-(-spec.vocab // tp),
                     sp=tp if sequence_parallel and tp > 1 else 1)


# --- the shard as a PyTorch module (meta tensors only) ----------------------------------------------------
def _rope(seq: int, head_dim: int, device):
    steps = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
    inv = 1.0 / (500000.0 ** (steps / head_dim))
    pos = torch.arange(seq, device=device).float()
    freqs = pos[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def _gather(hx, sp: int):
    """The sequence-parallel all-gather, [b, n/sp, h] -> [b, n, h], as a graph op with no device work
    (trnlab.torch.sequence_parallel: the planner costs the collective, and its reduce-scatter in backward)."""
    from trnlab.torch.sequence_parallel import sp_gather
    return sp_gather(hx, sp) if sp > 1 else hx


def _block_class():
    from trnlab.torch.models import RMSNorm, _Block, apply_rope

    class ShardBlock(_Block):
        """One rank's shard of a Llama-style or GPT-3-style decoder block (same ops as
        trnlab.torch.models' blocks, with an explicit head_dim so heads x head_dim != hidden)."""

        def __init__(self, s: ShardSpec):
            super().__init__()
            h, d = s.hidden, s.head_dim
            self.s = s
            llama = s.kind == "llama"
            # GPT-3's LayerNorm runs as an RMSNorm (one reduction fewer): the training path does not lower
            # native_layer_norm's saved mean/rstd outputs yet
            self.norm1, self.norm2 = RMSNorm(h, 1e-5), RMSNorm(h, 1e-5)
            self.qkv = nn.Linear(h, (s.heads + 2 * s.kv_heads) * d, bias=not llama)
            self.out = nn.Linear(s.heads * d, h, bias=not llama)
            self.up = nn.Linear(h, (2 if llama else 1) * s.intermediate, bias=not llama)
            self.down = nn.Linear(s.intermediate, h, bias=not llama)

        def _qkv(self, hx):
            s, (b, n, _) = self.s, hx.shape
            q, k, v = self.qkv(hx).split(
                [s.heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim], dim=-1)
            return (q.view(b, n, s.heads, s.head_dim).transpose(1, 2),
                    k.view(b, n, s.kv_heads, s.head_dim).transpose(1, 2),
                    v.view(b, n, s.kv_heads, s.head_dim).transpose(1, 2))

        def _mlp(self, hx):
            if self.s.kind == "llama":
                g, u = self.up(hx).chunk(2, dim=-1)
                return self.down(F.silu(g) * u)
            return self.down(F.gelu(self.up(hx), approximate="tanh"))

        def _rope(self, q, k, cos, sin):
            if self.s.kind == "llama":
                return apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            return q, k

        def forward(self, x, cos=None, sin=None):
            # sequence parallelism (Korthikanti et al., https://arxiv.org/abs/2205.05198): x holds this rank's
            # seq/sp positions; norms and residual adds run on them; the all-gather before the column-parallel
            # linears is _gather (no device work: the collective is costed by the planner) and the reduce-scatter
            # after the row-parallel ones keeps this rank's slice
            sp = self.s.sp
            b, n = x.shape[0], x.shape[1] * sp
            hx = self.norm1(x)
            q, k, v = self._qkv(_gather(hx, sp))
            q, k = self._rope(q, k, cos, sin)
            if self.s.kv_heads != self.s.heads:
                rep = self.s.heads // self.s.kv_heads
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            a = self._attend(q, k, v)
            x = x + self.out(a.transpose(1, 2).reshape(b, n, self.s.heads * self.s.head_dim))[:, :n // sp]
            hx = self.norm2(x)
            return x + self._mlp(_gather(hx, sp))[:, :n // sp], None

        def decode(self, x, cos, sin, ck, cv, pos, mask):
            b, n, _ = x.shape
            q, k, v = self._qkv(self.norm1(x))
            q, k = self._rope(q, k, cos, sin)
            ck, cv = ck.index_copy(2, pos, k), cv.index_copy(2, pos, v)
            a = F.scaled_dot_product_attention(q, ck, cv, attn_mask=mask, enable_gqa=True)
            x = x + self.out(a.transpose(1, 2).reshape(b, n, self.s.heads * self.s.head_dim))
            return x + self._mlp(self.norm2(x)), ck, cv
    return ShardBlock


class _Layer(nn.Module):
    """The shard on hidden states. Training calls backward with an output gradient as the next layer
    would pass it down (no loss op), so backward computes every weight gradient and the input gradient."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        from trnlab.torch.models import run_block
        cos, sin = _rope(x.shape[1] * self.block.s.sp, self.block.s.head_dim, x.device)
        return run_block(self.block, x, cos, sin)


# The inference graphs take the rotary tables as inputs: a served model computes them once per step and every
# layer reads them (transformers-neuronx's Llama layer graph takes `pos_embed` as a parameter,
# https://github.com/aws-neuron/transformers-neuronx/blob/main/src/transformers_neuronx/llama/hlo.py), so one
# layer's graph does not pay for them. Weights: transformers-neuronx loads q/k/v/gate/up as weight.T, [in, out]
# (llama/model.py in the same repository); trnlab's executor already places every linear's weight K-major
# ([in, out]) at load time (trnlab.torch.executor._place_state), so the shard keeps nn.Linear's layout.
class _Prefill(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x, cos, sin):
        return self.block(x, cos, sin)[0]


class _Decode(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x, cos, sin, pos, mask, ck, cv):
        return self.block.decode(x, cos, sin, ck, cv, pos, mask)


class _Head(nn.Module):
    """Final norm, this rank's vocabulary columns of the LM head, and the loss over them."""

    def __init__(self, s: ShardSpec):
        super().__init__()
        from trnlab.torch.models import RMSNorm
        self.norm = RMSNorm(s.hidden, 1e-5)          # GPT-3's LayerNorm as RMSNorm, see ShardBlock
        self.head = nn.Linear(s.hidden, s.vocab, bias=False)

    def forward(self, x, train: bool = False):
        logits = self.head(self.norm(x))
        # the loss's work over this rank's columns (max, exp, sum, log); picking the label's logit is
        # negligible beside it, and meta tensors carry no labels to pick
        return logits.float().logsumexp(-1).mean() if train else logits


# --- cache --------------------------------------------------------------------------------------------
_memory: dict = {}


def cache_dir() -> str:
    return os.environ.get("TRNLAB_PLAN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "trnlab", "plan")


def _key(what: str, s: ShardSpec, **extra) -> str:
    from trnlab import __version__
    from trnlab.core import compiler
    from trnlab.hw import graph_chip
    target = extra.get("target")
    payload = {"v": CACHE_VERSION, "trnlab": __version__, "what": what, "shard": asdict(s),
               "compiler": repr(compiler.current()), **extra}
    if target is not None:      # fit_plan varies the graph DMA efficiency: each value has its own entries
        payload["graph_dma_efficiency"] = graph_chip(target).dma_efficiency
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _cached(key: str, compute) -> dict:
    if key in _memory:
        return _memory[key]
    path = os.path.join(cache_dir(), key + ".json")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                _memory[key] = json.load(f)
            return _memory[key]
        except (OSError, ValueError):
            pass                                   # a torn write: simulate again
    value = compute()
    _memory[key] = value
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f)
        os.replace(tmp, path)
    except OSError:
        pass
    return value


def clear_memory_cache() -> None:
    _memory.clear()


# --- simulations ----------------------------------------------------------------------------------------
def train_layer(s: ShardSpec, *, batch: int, seq: int, dtype: str = "bf16", checkpointing: str = "selective",
                target: str = "trn1") -> dict:
    """Forward, backward (with recompute) and AdamW of one layer shard: seconds, and the bytes forward
    saves for backward. Keys: forward_s, backward_s (of which backward_weight_grad_s in the matmuls producing
    weight gradients), optimizer_s, saved_bytes, params, wall_s."""
    key = _key("train-layer", s, batch=batch, seq=seq, dtype=dtype, ckpt=checkpointing, target=target)
    return _cached(key, lambda: _train(s, batch, seq, dtype, checkpointing, target, head=False))


def train_head(s: ShardSpec, *, batch: int, seq: int, dtype: str = "bf16", target: str = "trn1") -> dict:
    """Final norm + vocabulary-parallel LM head + loss, forward, backward and AdamW."""
    key = _key("train-head", s, batch=batch, seq=seq, dtype=dtype, target=target)
    return _cached(key, lambda: _train(s, batch, seq, dtype, "none", target, head=True))


def _train(s, batch, seq, dtype, checkpointing, target, head) -> dict:
    from trnlab.torch import models
    from trnlab.torch.api import as_dtype
    from trnlab.torch.trainer import timing_only_step, trainable_params
    t0 = time.perf_counter()
    tdtype = as_dtype(dtype)
    with torch.device("meta"):
        module = _Head(s) if head else _Layer(models.set_checkpointing(_block_class()(s), checkpointing))
    x = torch.empty(batch, seq // (1 if head else s.sp), s.hidden, device="meta", requires_grad=True)
    torch._dynamo.reset()
    record, opt = timing_only_step(module, (x, True) if head else (x,), target=target, dtype=tdtype,
                                   name="plan-head" if head else "plan-layer")
    return {"forward_s": sum(r.latency_s for r in record.forwards),
            "backward_s": sum(r.latency_s for r in record.backwards),
            "backward_weight_grad_s": sum(weight_gradient_s(run.program.graph, rep, module)
                                          for run, rep in zip(record.backward_runs, record.backwards)),
            "optimizer_s": opt.last_step.latency_s,
            "saved_bytes": saved_bytes(record.forward_runs[-1].program.graph, tdtype, 1 if head else s.sp),
            "params": trainable_params(module), "wall_s": time.perf_counter() - t0}


def saved_bytes(forward_graph: torch.fx.Graph, dtype: torch.dtype, sp: int) -> int:
    """Bytes the layer's forward saves for backward (trnlab.torch.trainer.saved_activation_bytes), except
    that a sequence-parallel all-gather's output (_gather) counts as the shard: Megatron keeps the shard and
    all-gathers it again in backward for the weight gradient
    (Korthikanti et al., https://arxiv.org/abs/2205.05198 section 4.2.2); the plan adds that all-gather."""
    from trnlab.torch.trainer import _op_name, _storage_base, saved_activation_bytes

    def kept(node):
        base = _storage_base(node)
        if sp > 1 and _op_name(base) == "sp_gather":
            return _storage_base(base.args[0])
        return base
    return saved_activation_bytes(forward_graph, 1, dtype, base_of=kept)


_MATMULS = {"mm", "bmm", "addmm"}


def weight_gradient_s(backward_graph: torch.fx.Graph, report, module: nn.Module) -> float:
    """Simulated seconds of the backward matmuls that produce parameter gradients (dW = dY^T X). Nothing
    downstream in the step waits for them but the optimizer, so the compiler's scheduler can run them while
    the CC core performs the layer's tensor-parallel collectives (AWS, "Compute-Communication Overlap in
    Neuron": separate scheduling queues for compute and communication, independent except for explicit
    dependencies, https://awsdocs-neuron.readthedocs-hosted.com/en/latest/neuron-runtime/explore/compute-comm-overlap.html)."""
    names = weight_gradient_ops(backward_graph, module)
    return sum(op.time_s for op in report.ops if op.name in names)


def weight_gradient_ops(backward_graph: torch.fx.Graph, module: nn.Module) -> set:
    """Names of the backward graph's matmul nodes whose result is returned as a 2-D parameter's gradient."""
    from trnlab.torch.trainer import _op_name, _storage_base
    shapes = {tuple(p.shape) for p in module.parameters() if p.requires_grad and p.dim() == 2}
    out = next(n for n in backward_graph.nodes if n.op == "output")
    flat = out.args[0] if isinstance(out.args[0], (list, tuple)) else [out.args[0]]
    names = set()
    for node in flat:
        val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
        if getattr(val, "shape", None) is None or tuple(val.shape) not in shapes:
            continue
        base = _storage_base(node)
        if _op_name(base) in _MATMULS:
            names.add(base.name)
    return names


def prefill_layer(s: ShardSpec, *, batch: int, seq: int, dtype: str = "bf16", target: str = "trn1") -> dict:
    key = _key("prefill-layer", s, batch=batch, seq=seq, dtype=dtype, target=target)
    return _cached(key, lambda: _infer(s, "prefill", batch, seq, 0, dtype, target))


def decode_layer(s: ShardSpec, *, batch: int, cache_len: int, dtype: str = "bf16", target: str = "trn1") -> dict:
    key = _key("decode-layer", s, batch=batch, cache=cache_len, dtype=dtype, target=target)
    return _cached(key, lambda: _infer(s, "decode", batch, 1, cache_len, dtype, target))


def head_forward(s: ShardSpec, *, batch: int, tokens: int, dtype: str = "bf16", target: str = "trn1") -> dict:
    """LM head forward on `tokens` positions per sequence (the last prompt token, or one decode token)."""
    key = _key("head-forward", s, batch=batch, tokens=tokens, dtype=dtype, target=target)
    return _cached(key, lambda: _infer(s, "head", batch, tokens, 0, dtype, target))


def _infer(s, what, batch, seq, cache_len, dtype, target) -> dict:
    from trnlab.torch.api import CompiledModel
    t0 = time.perf_counter()
    with torch.device("meta"):
        if what == "head":
            module = _Head(s).eval()
        else:
            block = _block_class()(s).eval()
            module = _Prefill(block) if what == "prefill" else _Decode(block)
    if what == "prefill" and s.sp > 1:
        # sequence parallel: the rank's input is its slice of the (padded) prompt; the block gathers it
        seq = -(-seq // s.sp) * s.sp
    x = torch.empty(batch, seq // (s.sp if what == "prefill" else 1), s.hidden, device="meta")
    rope = (torch.empty(seq, s.head_dim, device="meta"), torch.empty(seq, s.head_dim, device="meta"))
    if what == "decode":
        cache = torch.empty(batch, s.kv_heads, cache_len, s.head_dim, device="meta")
        mask = torch.empty(1, 1, 1, cache_len, device="meta")
        inputs = (x, *rope, torch.tensor([cache_len - 1], device="meta"), mask, cache, cache.clone())
    elif what == "prefill":
        inputs = (x, *rope)
    else:
        inputs = (x,)
    with torch.no_grad():
        compiled = CompiledModel(module, inputs, target=target, dtype=dtype, numerics=False, check=False,
                                 name=f"plan-{what}", trace=False, run_example=False)
        compiled(*inputs)
    return {"latency_s": compiled.report.latency_s, "wall_s": time.perf_counter() - t0}
