"""Training plans: one optimizer step of a whole model on a cluster, composed from per-rank layer
simulations (trnlab.plan.layers) and the fitted collective model (trnlab.isa.collectives).

Rank layout (Megatron's order, TP innermost, then DP, PP outermost: https://arxiv.org/abs/2104.04473 §3):
rank = tp_rank + TP x (dp_rank + DP x pp_rank). TP stays inside an instance (NeuronLink).

Step time of the slowest pipeline stage (it holds layers/PP layers and the LM head, or the embedding):
  per microbatch   forward + backward of its layers (recompute included), 2 TP all-reduces (with
                   sequence parallelism, the default as in NxD and NeMo: reduce-scatter + all-gather) of
                   [microbatch x seq x hidden] per layer in forward and 2 in backward (4 with full
                   checkpointing, whose recomputed forward all-reduces again), and with PP the activation
                   send/recv to the next stage in each direction. Forward collectives are on the critical
                   path; a layer's backward collectives overlap its weight-gradient matmuls (the compiler
                   schedules compute and CC queues independently; AWS's compute-comm-overlap doc), so only
                   max(0, collectives - weight-gradient time) is exposed (tp_collectives_s; the total is
                   tp_collectives_total_s). DMA contention between the two is not modelled.
  pipeline         1F1B: (microbatches + PP - 1) x per microbatch; the (PP - 1) extra slots are the bubble
                   (Narayanan et al., https://arxiv.org/abs/2104.04473 §2.2)
  data parallel    gradient all-reduce (or ZeRO-1 reduce-scatter) over DP, overlapped with the last
                   microbatch's backward (only what exceeds it is exposed); ZeRO-1's all-gather of the
                   updated bf16 weights follows the optimizer and is exposed. The TP groups of a node reduce at
                   the same time and share its EFA: modelled as one group carrying their bytes.
  optimizer        AdamW over the rank's parameters (1/DP of them with ZeRO-1), simulated on the chip
  per microbatch   + MICROBATCH_OVERHEAD_S (fitted, see below): the framework's time per microbatch beyond the
                   simulated device work (in the bubble slots too)
  overhead         STEP_OVERHEAD_S per step (fitted, see below)
Memory per core: bf16 weights and gradients (+ an fp32 accumulator with more than one microbatch), fp32
master weights and AdamW states (divided by DP with ZeRO-1), and the activations forward saves for backward
per layer (read off the captured graph) times layers/PP times the microbatches in flight (min(PP, m), 1F1B).
With precision "bf16-sr" (NeMo's BF16 + stochastic rounding, XLA_USE_BF16=1: every fp32 tensor, optimizer
states included, is held in bf16 and rounded stochastically; https://awsdocs-neuron.readthedocs-hosted.com/en/
latest/about-neuron/appnotes/torch-neuronx/migration-from-xla-downcast-bf16.html) there is no fp32 master, no fp32
gradient accumulator, and the two AdamW states take 2 bytes each. The optimizer's simulated time stays that of
the fp32-state kernel (an overestimate for bf16 states).
MFU as AWS computes it (trainium-scale.md §2): seq/s x seq x (6N + 12 x layers x hidden x seq) / (chips x
published dense BF16 per chip).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from trnlab.errors import HbmCapacityError, OptionError
from trnlab.hw.systems import SystemSpec, cluster, get_system
from trnlab.isa.collectives import collective_cost
from trnlab.plan import layers
from trnlab.plan.configs import ModelSpec, get_model

# [fitted] per-step constant (runtime launch, host-side step, data loading) fitted to the trainium-scale.md §2
# training rows only (docs/validation.md); 0 means nothing was fitted.
STEP_OVERHEAD_S = 0.0
# [fitted] time of one execution of a traced inference graph (a prefill, a decode token: trnlab.plan.infer)
# beyond the simulated engines' and queues' work: the NEFF launch on every rank, the host handing the inputs
# in and the sampled token out. Fitted by benchmarks/fit_plan.py to the trainium-scale.md §2 inference rows
# (docs/calibration.md "Model-level constants"); bounded to [0, 5 ms].
GRAPH_EXECUTION_S = 2.71e-3
# [fitted] time per training microbatch beyond the simulated device work. Training runs through torch-xla's
# lazy tensors, whose host side traces the Python step into a graph on every iteration before launching the
# cached NEFF (https://docs.pytorch.org/xla/release/r2.8/learn/trace-vs-execution-time.html), unlike traced
# inference graphs (https://awsdocs-neuron.readthedocs-hosted.com/en/latest/frameworks/torch/torch-neuronx/
# programming-guide/inference/trace-vs-xla-lazytensor.html); plus the per-microbatch launch, synchronisation
# and gradient-accumulation bookkeeping. Fitted by benchmarks/fit_plan.py to the §2 training rows; bounded to
# [0, 200 ms].
MICROBATCH_OVERHEAD_S = 107e-3

# Published dense BF16 per chip, the denominator of AWS's MFU (trainium-scale.md §1.1: trn1 190 TF
# (trainium.rst), trn2 667 TF (trainium2.rst), trn3 671 TF (trainium3.rst)).
PUBLISHED_BF16_PER_CHIP = {2: 190e12, 3: 667e12, 4: 671e12}

CHECKPOINTING = ("none", "selective", "full")
TOTALS = ("dp_reduce_total_s", "tp_collectives_total_s")   # breakdown entries that include hidden time
PRECISIONS = ("mixed", "bf16-sr")
BF16, FP32, ADAMW_STATE = 2, 4, 8


def mfu_flops_per_token(spec: ModelSpec, seq: int) -> float:
    """AWS's training FLOPs per token: 6N + 12 x layers x hidden x seq (trainium-scale.md §2)."""
    return 6.0 * spec.params() + 12.0 * spec.layers * spec.hidden * seq


def peak_flops(system: SystemSpec) -> float:
    per_chip = PUBLISHED_BF16_PER_CHIP.get(system.chip.nc_version,
                                           system.chip.peak_bf16_flops * system.chip.cores_per_chip)
    return per_chip * system.chips


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    dp: int
    microbatch: int = 1
    zero1: bool = True
    checkpointing: str = "selective"
    sequence_parallel: bool = True
    interleave: int = 1          # virtual pipeline stages per rank (Megatron's interleaved 1F1B)
    precision: str = "mixed"     # "mixed": bf16 compute, fp32 master + states; "bf16-sr": all bf16, SR


@dataclass(frozen=True)
class TrainPlan:
    model: str
    system: str
    nodes: int
    seq: int
    global_batch: int
    layout: Layout
    microbatches: int
    step_s: float
    breakdown: dict
    memory: dict
    hbm_capacity_bytes: int
    flops_per_token: float
    peak_flops: float
    usd_per_hour: float          # per instance
    price_source: str
    instances: int
    simulated: dict = field(default_factory=dict)    # the per-layer simulation results used

    @property
    def seq_per_s(self) -> float:
        return self.global_batch / self.step_s

    @property
    def tokens_per_s(self) -> float:
        return self.seq_per_s * self.seq

    @property
    def mfu(self) -> float:
        return self.tokens_per_s * self.flops_per_token / self.peak_flops

    @property
    def hbm_per_core_bytes(self) -> int:
        return sum(self.memory.values())

    @property
    def fits(self) -> bool:
        return self.hbm_per_core_bytes <= self.hbm_capacity_bytes

    @property
    def usd_per_hour_total(self) -> float:
        return self.usd_per_hour * self.instances

    @property
    def usd_per_1m_tokens(self) -> float:
        return self.usd_per_hour_total / 3600.0 / self.tokens_per_s * 1e6 if self.usd_per_hour else 0.0

    def usd_for_tokens(self, tokens: float) -> float:
        return self.usd_per_1m_tokens * tokens / 1e6

    def to_dict(self) -> dict:
        return {"model": self.model, "system": self.system, "nodes": self.nodes, "seq": self.seq,
                "global_batch": self.global_batch, **asdict(self.layout), "microbatches": self.microbatches,
                "step_s": self.step_s, "seq_per_s": self.seq_per_s, "tokens_per_s": self.tokens_per_s,
                "mfu": self.mfu, "hbm_per_core_bytes": self.hbm_per_core_bytes,
                "hbm_capacity_bytes": self.hbm_capacity_bytes, "fits": self.fits, "memory": self.memory,
                "usd_per_1m_tokens": self.usd_per_1m_tokens, "usd_per_hour": self.usd_per_hour_total,
                "price_source": self.price_source, "breakdown": self.breakdown, "simulated": self.simulated}


# --- layout checks ------------------------------------------------------------------------------------------
def layout_problems(spec: ModelSpec, system: SystemSpec, seq: int, global_batch: int, lay: Layout) -> list[str]:
    """Why a layout is not valid (empty when it is): divisibility and topology, not memory."""
    out = []
    for name in ("tp", "pp", "dp", "microbatch", "interleave"):
        value = getattr(lay, name)
        if not (isinstance(value, int) and value >= 1):
            out.append(f"--{name} must be an integer >= 1, got {value!r}")
    if out:
        return out
    if lay.checkpointing not in CHECKPOINTING:
        out.append(f"--checkpointing {lay.checkpointing!r}; valid values: {'|'.join(CHECKPOINTING)}")
    if lay.tp * lay.pp * lay.dp != system.ranks:
        out.append(f"TP x PP x DP = {lay.tp} x {lay.pp} x {lay.dp} = {lay.tp * lay.pp * lay.dp} must equal the "
                   f"{system.ranks} ranks of {system.nodes} x {system.name}")
    if lay.tp > system.ranks_per_instance:
        out.append(f"TP {lay.tp} exceeds the {system.ranks_per_instance} ranks of one {system.name} (TP stays "
                   "inside an instance)")
    elif system.ranks_per_instance % lay.tp:
        out.append(f"TP {lay.tp} does not divide the {system.ranks_per_instance} ranks of one {system.name}")
    if lay.sequence_parallel and lay.tp > 1 and seq % lay.tp:
        out.append(f"sequence parallelism needs TP {lay.tp} to divide the sequence length {seq}")
    if spec.layers % (lay.pp * lay.interleave):
        out.append(f"PP {lay.pp} x interleave {lay.interleave} does not divide the {spec.layers} layers"
                   if lay.interleave > 1 else f"PP {lay.pp} does not divide the {spec.layers} layers")
    if lay.interleave > 1 and (lay.pp == 1 or (global_batch // max(1, lay.dp * lay.microbatch)) % lay.pp):
        out.append(f"interleaving needs PP > 1 and a microbatch count that PP {lay.pp} divides")
    if global_batch % (lay.dp * lay.microbatch):
        out.append(f"the global batch {global_batch} is not a multiple of DP x microbatch = "
                   f"{lay.dp} x {lay.microbatch}")
    out += layers.tp_problems(spec, lay.tp)
    return out


# --- the plan ---------------------------------------------------------------------------------------------
def plan_training(model, *, system="trn1.32xlarge", nodes: int = 1, seq: int = 4096, global_batch: int = 1024,
                  tp: int = 8, pp: int = 1, dp: int | None = None, microbatch: int = 1, zero1: bool = True,
                  checkpointing: str = "selective", sequence_parallel: bool = True, interleave: int = 1,
                  dtype: str = "bf16", precision: str = "mixed",
                  usd_per_hour: float | None = None, check_memory: bool = False) -> TrainPlan:
    """Step time, throughput, MFU, memory per core and cost of training `model` with one layout."""
    spec = get_model(model)
    sysspec = cluster(get_system(system), nodes)
    for name, value in (("--seq", seq), ("--global-batch", global_batch)):
        if not (isinstance(value, int) and value >= 1):
            raise OptionError(f"{name} must be an integer >= 1, got {value!r}")
    if dp is None:
        if not all(isinstance(v, int) and v >= 1 for v in (tp, pp)) or sysspec.ranks % (tp * pp):
            raise OptionError(f"{spec.name}: TP x PP = {tp} x {pp} must divide the {sysspec.ranks} ranks of "
                              f"{nodes} x {sysspec.name}")
        dp = sysspec.ranks // (tp * pp)
    if precision not in PRECISIONS:
        raise OptionError(f"precision {precision!r} is not supported; valid values: {'|'.join(PRECISIONS)}")
    lay = Layout(tp, pp, dp, microbatch, zero1, checkpointing, sequence_parallel, interleave, precision)
    problems = layout_problems(spec, sysspec, seq, global_batch, lay)
    if problems:
        raise OptionError(f"{spec.name} on {nodes} x {sysspec.name}: " + "; ".join(problems))
    plan = _compose(spec, sysspec, seq, global_batch, lay, dtype, usd_per_hour)
    if check_memory and not plan.fits:
        raise HbmCapacityError(f"{spec.name} with TP {tp} PP {pp} DP {dp} needs {plan.hbm_per_core_bytes} B per "
                               f"core, more than the {plan.hbm_capacity_bytes} B of HBM of one {sysspec.name} core",
                               required=plan.hbm_per_core_bytes, limit=plan.hbm_capacity_bytes)
    return plan


def _ar(nbytes: int, ranks: int, system: SystemSpec, op: str = "all-reduce", launch: str = "host",
        itemsize: int = BF16) -> float:
    """One collective of bf16 values (activations, gradients; itemsize=4 for the fp32 loss statistics)."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    return collective_cost(op, int(nbytes), ranks, system, launch=launch, itemsize=itemsize).latency_s


def _tp(nbytes: int, ranks: int, system: SystemSpec, op: str = "all-reduce", itemsize: int = BF16) -> float:
    """A TP collective: a node of the compiled forward/backward graph (NxD traces the sequence-parallel
    reduce-scatter / all-gather and the TP all-reduces into the NEFF), so in-graph fixed terms. The DP gradient
    reduction and ZeRO-1's all-gather stay host-launched (_ar's default): they cross nodes over EFA, whose only
    published measurements are nccom-test's stand-alone 2-node rows (what the host fit is fitted to), and at
    their hundreds of MB the fixed terms are negligible beside the bandwidth terms."""
    return _ar(nbytes, ranks, system, op, launch="graph", itemsize=itemsize)


def _compose(spec, system, seq, global_batch, lay: Layout, dtype, usd_per_hour) -> TrainPlan:
    target = system.chip.name
    shard = layers.shard(spec, lay.tp, sequence_parallel=lay.sequence_parallel)
    # a rank of lnc physical cores (trn2 LNC=2): the compiler splits its shard over them, so the timed
    # unit is the shard over TP x lnc cores (padded if that does not divide); memory stays per rank
    core = shard if system.lnc == 1 else layers.shard(spec, lay.tp * system.lnc, pad=True,
                                                       sequence_parallel=lay.sequence_parallel)
    mb, m = lay.microbatch, global_batch // (lay.dp * lay.microbatch)
    per_stage = spec.layers // lay.pp
    lt = layers.train_layer(core, batch=mb, seq=seq, dtype=dtype, checkpointing=lay.checkpointing, target=target)
    ht = layers.train_head(core, batch=mb, seq=seq, dtype=dtype, target=target)
    node = system.replace(nodes=1)
    act = mb * seq * spec.hidden * BF16
    # one TP reduction point: an all-reduce, or with sequence parallelism a reduce-scatter and (before the
    # next column-parallel linear) an all-gather of the same [mb x seq x hidden] buffer
    tp_ar = (_tp(act, lay.tp, node, "reduce-scatter") + _tp(act, lay.tp, node, "all-gather")
             if shard.sp > 1 else _tp(act, lay.tp, node))
    # vocab-parallel loss: all-reduce of the max and the sum over [mb, seq] in fp32; embedding output
    # all-reduce in forward, LM-head input-gradient all-reduce in backward
    head_fwd_comm = 2 * _tp(mb * seq * FP32, lay.tp, node, itemsize=FP32) + tp_ar
    bwd_ars = 4 if lay.checkpointing == "full" else 2
    # sequence parallelism keeps the shard of each all-gathered input and gathers it again in backward for the
    # weight gradient (layers.saved_bytes): one more all-gather per reduction point in backward
    regather = 2 * _tp(act, lay.tp, node, "all-gather") if shard.sp > 1 else 0.0
    fwd_s = per_stage * lt["forward_s"] + ht["forward_s"]
    bwd_s = per_stage * lt["backward_s"] + ht["backward_s"]
    # backward: a layer's TP collectives run on the CC core while its weight-gradient matmuls (which
    # nothing but the optimizer waits for) keep the engines busy; only what exceeds them is exposed
    bwd_tp_exposed = (per_stage * max(0.0, bwd_ars * tp_ar + regather - lt.get("backward_weight_grad_s", 0.0))
                      + max(0.0, tp_ar - ht.get("backward_weight_grad_s", 0.0)))
    tp_total = per_stage * ((2 + bwd_ars) * tp_ar + regather) + head_fwd_comm + tp_ar
    tp_s = per_stage * 2 * tp_ar + head_fwd_comm + bwd_tp_exposed
    # interleaving: each microbatch crosses PP x interleave stage boundaries; the bubble shrinks by the factor
    p2p_s = 2 * lay.interleave * _p2p(act // shard.sp, system, lay) if lay.pp > 1 else 0.0
    per_mb = fwd_s + bwd_s + tp_s + p2p_s + MICROBATCH_OVERHEAD_S
    bubble_s = (lay.pp - 1) * per_mb / lay.interleave
    stage_params = per_stage * shard.layer_params() + _embedding_params(spec, shard, lay.pp)
    dp_s, ag_s = _data_parallel(stage_params, system, lay)
    dp_exposed = max(0.0, dp_s - (per_stage * lt["backward_s"] + ht["backward_s"]))
    opt_s = (per_stage * lt["optimizer_s"] + ht["optimizer_s"]) / (lay.dp if lay.zero1 else 1)
    breakdown = {"forward_s": m * fwd_s, "backward_s": m * bwd_s, "tp_collectives_s": m * tp_s,
                 "pp_p2p_s": m * p2p_s, "pipeline_bubble_s": bubble_s, "dp_reduce_exposed_s": dp_exposed,
                 "zero1_allgather_s": ag_s, "optimizer_s": opt_s, "microbatch_overhead_s": m * MICROBATCH_OVERHEAD_S,
                 "overhead_s": STEP_OVERHEAD_S}
    step_s = sum(breakdown.values())
    breakdown["dp_reduce_total_s"] = dp_s
    breakdown["tp_collectives_total_s"] = m * tp_total
    memory = _memory(spec, shard, lt, ht, stage_params, lay, m, system.lnc)
    price = system.usd_per_hour if usd_per_hour is None else float(usd_per_hour)
    source = system.price_source if usd_per_hour is None else "given by the user"
    return TrainPlan(spec.name, system.name, system.nodes, seq, global_batch, lay, m, step_s, breakdown, memory,
                     system.hbm_bytes_per_rank, mfu_flops_per_token(spec, seq), peak_flops(system), price, source,
                     system.instances, {"layer": lt, "head": ht, "shard": asdict(shard), "timed_shard": asdict(core)})


def _embedding_params(spec: ModelSpec, shard, pp: int) -> int:
    """Vocabulary-parallel embedding and LM head on the stage(s) holding them (both when PP = 1)."""
    matrices = 1 if (spec.tie_embeddings or pp > 1) else 2
    positions = spec.max_seq * spec.hidden if (spec.kind == "gpt" and pp == 1) else 0
    return matrices * shard.vocab * spec.hidden + positions + spec.hidden


def _p2p(nbytes: int, system: SystemSpec, lay: Layout) -> float:
    """One activation (or its gradient) to the next stage: across nodes when a stage fills them."""
    span = lay.tp * lay.dp
    if span >= system.ranks_per_instance:
        pair = cluster(system.replace(nodes=1), 2)
        return collective_cost("send-recv", int(nbytes), 2, pair).latency_s
    node = system.replace(nodes=1)
    return collective_cost("send-recv", int(nbytes), node.ranks, node, pairs=[(0, span)]).latency_s


def _data_parallel(stage_params: int, system: SystemSpec, lay: Layout) -> tuple[float, float]:
    """(gradient all-reduce or ZeRO-1 reduce-scatter seconds, ZeRO-1 weight all-gather seconds)."""
    if lay.dp == 1:
        return 0.0, 0.0
    grad = stage_params * BF16
    span = lay.tp * lay.dp
    nodes = max(1, span // system.ranks_per_instance)
    if nodes > 1:
        sharing = system.ranks_per_instance // (lay.dp // nodes)   # DP groups reducing through one node's EFA
        where = cluster(system.replace(nodes=1), nodes)
    else:
        sharing, where = 1, system.replace(nodes=1)
    nbytes = grad * sharing
    if lay.zero1:
        return _ar(nbytes, lay.dp, where, "reduce-scatter"), _ar(nbytes, lay.dp, where, "all-gather")
    return _ar(nbytes, lay.dp, where), 0.0


def _memory(spec, shard, lt, ht, stage_params, lay: Layout, m: int, lnc: int = 1) -> dict:
    p = stage_params
    per_stage = spec.layers // lay.pp
    # 1F1B keeps min(PP, m) microbatches in flight on the first stage; interleaving adds (PP - 1) / (PP x v)
    # of that (Narayanan et al. https://arxiv.org/abs/2104.04473 section 2.2); lnc cores hold a rank's share
    in_flight = min(lay.pp, m) * (1 + (lay.pp - 1) / (lay.pp * lay.interleave) if lay.interleave > 1 else 1) * lnc
    mixed = lay.precision == "mixed"
    grads = p * BF16 + (p * FP32 if m > 1 and mixed else 0)
    states = ADAMW_STATE + FP32 if mixed else 2 * BF16          # (fp32 master + 2 fp32 states) or 2 bf16 states
    return {"weights_bytes": p * BF16, "gradients_bytes": grads,
            "optimizer_bytes": math.ceil(p * states / (lay.dp if lay.zero1 else 1)),
            "activations_bytes": int(in_flight * (per_stage * lt["saved_bytes"] + ht["saved_bytes"]))}
