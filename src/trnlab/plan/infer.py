"""Inference plans: time to first token and time per output token of a model served with tensor
parallelism on one instance, composed from simulated per-rank layer shards (trnlab.plan.layers).

  TTFT = layers x (prefill of the prompt through one shard + 2 TP all-reduces of [batch x input x hidden])
         + the embedding's all-reduce + the LM head on the last position + the all-gather of the logits
  TPOT = layers x (one decode step of one shard against a static KV cache of input + output positions, as
         Neuron serves decoders + 2 TP all-reduces of [batch x hidden]) + embedding all-reduce + LM head
         + logits all-gather
  both + GRAPH_EXECUTION_S (trnlab.plan.train): the runtime's time per execution of the traced graph (one
  prefill, one decode step), fitted with the other model-level constants.
The layers run on trnlab.hw.graph_chip (the fitted DMA efficiency of compiled graphs).
The TP collectives are nodes of the compiled prefill/decode graphs (transformers-neuronx and NxD Inference
trace each layer's all-reduces into the model's NEFF), so they are costed as in-graph collectives
(collective_cost(..., launch="graph"): no host launch; GRAPH_TUNINGS fitted to the trainium-scale.md §2
rows by benchmarks/fit_plan.py), not as nccom-test's stand-alone launches.
Heads that TP does not divide are padded (as transformers-neuronx does). Throughput counts generated
tokens: batch x output / (TTFT + (output - 1) x TPOT). Memory per core: bf16
weights of the rank's shard plus its KV cache.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from trnlab.errors import OptionError
from trnlab.hw.systems import get_system
from trnlab.plan import layers, train
from trnlab.plan.configs import get_model
from trnlab.plan.train import _tp

BF16 = 2


@dataclass(frozen=True)
class InferencePlan:
    model: str
    system: str
    tp: int
    batch: int
    input: int
    output: int
    ttft_s: float
    tpot_s: float
    breakdown: dict
    memory: dict
    hbm_capacity_bytes: int
    usd_per_hour: float          # the share of the instance the TP ranks occupy
    price_source: str

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.output / (self.ttft_s + (self.output - 1) * self.tpot_s)

    @property
    def usd_per_1m_tokens(self) -> float:
        return self.usd_per_hour / 3600.0 / self.tokens_per_s * 1e6 if self.usd_per_hour else 0.0

    @property
    def hbm_per_core_bytes(self) -> int:
        return sum(self.memory.values())

    @property
    def fits(self) -> bool:
        return self.hbm_per_core_bytes <= self.hbm_capacity_bytes

    def to_dict(self) -> dict:
        return {"model": self.model, "system": self.system, "tp": self.tp, "batch": self.batch,
                "input": self.input, "output": self.output, "ttft_ms": self.ttft_s * 1e3,
                "tpot_ms": self.tpot_s * 1e3, "tokens_per_s": self.tokens_per_s,
                "usd_per_1m_tokens": self.usd_per_1m_tokens, "usd_per_hour": self.usd_per_hour,
                "price_source": self.price_source, "hbm_per_core_bytes": self.hbm_per_core_bytes,
                "hbm_capacity_bytes": self.hbm_capacity_bytes, "fits": self.fits, "memory": self.memory,
                "breakdown": self.breakdown}


def prefill_tokens(input: int, buckets=None) -> int:
    """Prompt positions the prefill graph runs: the smallest context-encoding bucket that holds the prompt
    (NxD Inference and transformers-neuronx compile one graph per bucket and pad the prompt to it), or the
    prompt itself without buckets."""
    if not buckets:
        return input
    fits = [b for b in buckets if b >= input]
    if not fits:
        raise OptionError(f"--context-buckets: the largest bucket, {max(buckets)}, is shorter than the "
                          f"{input}-token prompt")
    return min(fits)


def plan_inference(model, *, system="trn1.32xlarge", tp: int = 32, batch: int = 1, input: int = 128,
                   output: int = 128, dtype: str = "bf16", usd_per_hour: float | None = None,
                   sequence_parallel: bool = False, context_buckets=None) -> InferencePlan:
    """TTFT, TPOT, throughput and cost of serving `model` with TP over one instance; every TP collective is
    in-graph (trnlab.plan.train._tp: GRAPH_TUNINGS of trnlab.isa.collectives).
    sequence_parallel: the prefill graph keeps the residual stream split over the sequence (NxD Inference's
    --sequence-parallel-enabled): norms and residual adds on 1/TP of the tokens, a reduce-scatter and an
    all-gather in place of each all-reduce. context_buckets: the prefill runs the smallest bucket holding
    the prompt (prefill_tokens)."""
    spec = get_model(model)
    sysspec = get_system(system).replace(nodes=1)
    for name, value in (("--tp", tp), ("--batch", batch), ("--input", input), ("--output", output),
                        *(("--context-buckets", b) for b in (context_buckets or ()))):
        if not (isinstance(value, int) and value >= 1):
            raise OptionError(f"{name} must be an integer >= 1, got {value!r}")
    if tp > sysspec.ranks_per_instance or sysspec.ranks_per_instance % tp:
        raise OptionError(f"--tp {tp} must divide the {sysspec.ranks_per_instance} ranks of one {sysspec.name}")
    # transformers-neuronx pads the attention heads (and FFN) it cannot split evenly over TP
    padded = bool(layers.tp_problems(spec, tp))
    s, target, length = layers.shard(spec, tp, pad=True), sysspec.chip.name, input + output
    # a rank of lnc physical cores (trn2 LNC=2) runs its shard split over them: time the TP x lnc shard
    core = s if sysspec.lnc == 1 else layers.shard(spec, tp * sysspec.lnc, pad=True)
    tokens = prefill_tokens(input, context_buckets)
    sp = sequence_parallel and tp > 1
    pre_core = layers.shard(spec, tp * sysspec.lnc, pad=True, sequence_parallel=True) if sp else core
    pre = layers.prefill_layer(pre_core, batch=batch, seq=tokens, dtype=dtype, target=target)["latency_s"]
    dec = layers.decode_layer(core, batch=batch, cache_len=length, dtype=dtype, target=target)["latency_s"]
    head = layers.head_forward(core, batch=batch, tokens=1, dtype=dtype, target=target)["latency_s"]
    gather = _tp(batch * s.vocab * tp * BF16, tp, sysspec, "all-gather")
    act = batch * tokens * spec.hidden * BF16
    ar_pre = (_tp(act, tp, sysspec, "reduce-scatter") + _tp(act, tp, sysspec, "all-gather")) if sp else _tp(act, tp, sysspec)
    ar_dec = _tp(batch * spec.hidden * BF16, tp, sysspec)
    n = spec.layers
    launch = train.GRAPH_EXECUTION_S          # one graph execution per prefill and per decode token
    breakdown = {"prefill_layers_s": n * pre, "prefill_tp_collectives_s": (2 * n + 1) * ar_pre,
                 "decode_layers_s": n * dec, "decode_tp_collectives_s": (2 * n + 1) * ar_dec,
                 "lm_head_s": head, "logits_allgather_s": gather, "graph_launch_s": launch,
                 "prefill_tokens": tokens, "sequence_parallel": sp}
    ttft = n * pre + (2 * n + 1) * ar_pre + head + gather + launch
    tpot = n * dec + (2 * n + 1) * ar_dec + head + gather + launch
    weights = (n * s.layer_params() + (1 if spec.tie_embeddings else 2) * s.vocab * spec.hidden) * BF16
    kv = n * 2 * batch * s.kv_heads * length * s.head_dim * BF16
    share = tp / sysspec.ranks_per_instance
    price = (sysspec.usd_per_hour if usd_per_hour is None else float(usd_per_hour)) * share
    source = sysspec.price_source if usd_per_hour is None else "given by the user"
    return InferencePlan(spec.name, sysspec.name, tp, batch, input, output, ttft, tpot,
                         {**breakdown, "shard": asdict(s), "padded_heads": padded},
                         {"weights_bytes": weights, "kv_cache_bytes": kv},
                         sysspec.hbm_bytes_per_rank, price, source)
