"""Training steps on one simulated NeuronCore: the HBM a step needs, the FLOPs it is credited with,
and the loop that runs forward, backward and the optimizer on the chip beside eager PyTorch.

Memory (per NeuronCore, AWS's mixed-precision recipe: bf16 weights and gradients for compute, fp32
master weights and optimizer states, as NxD's standard mixed precision does;
https://awsdocs-neuron.readthedocs-hosted.com/en/latest/about-neuron/appnotes/torch-neuronx/migration-from-xla-downcast-bf16.html):
  weights      parameters in the compute dtype
  gradients    one gradient per parameter in the compute dtype, plus an fp32 accumulator when
               gradients are accumulated over micro-batches in a lower precision
  optimizer    fp32 states (AdamW: exp_avg and exp_avg_sq; SGD: momentum), plus fp32 master weights
               when the compute dtype is not fp32
  activations  the tensors forward saves for backward, read off the captured forward graph (so
               activation checkpointing changes them), in the compute dtype
With ZeRO-1 over N data-parallel ranks (train(dp=N, zero1=True)) each core keeps the optimizer states and
fp32 master weights of its 1/N block of every parameter only (dim 0 padded to a multiple of N); weights
and gradients stay whole. Data parallelism: trnlab.torch.data_parallel.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch

from trnlab.errors import HbmCapacityError
from trnlab.torch.report import fmt_bytes

OPTIMIZER_STATE_BYTES = {"adamw": 8, "sgd": 4}     # fp32 bytes of state per parameter
FP32 = 4


@dataclass(frozen=True)
class HbmBreakdown:
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    capacity_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.gradients_bytes + self.optimizer_bytes + self.activations_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes}

    def describe(self) -> str:
        parts = [f"{k.removesuffix('_bytes')} {fmt_bytes(v)}" for k, v in asdict(self).items()
                 if k != "capacity_bytes"]
        return f"{' + '.join(parts)} = {fmt_bytes(self.total_bytes)} of {fmt_bytes(self.capacity_bytes)}"

    def check(self, name: str, target: str) -> None:
        """HbmCapacityError naming every part when the step does not fit one NeuronCore's HBM."""
        if not self.fits:
            raise HbmCapacityError(
                f"training {name} does not fit in the HBM of one {target} NeuronCore: {self.describe()} "
                f"({self.total_bytes} B > {self.capacity_bytes} B); use activation checkpointing, a smaller "
                "batch or sequence, or shard the model over more NeuronCores",
                required=self.total_bytes, limit=self.capacity_bytes)


def trainable_params(model: torch.nn.Module) -> int:
    """Parameters the optimizer updates (a tied weight counts once, as model.parameters() yields it)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def hbm_breakdown(model: torch.nn.Module, dtype: torch.dtype, *, optimizer: str, activations_bytes: int,
                  capacity_bytes: int, accumulation: int = 1, zero1_ranks: int = 1) -> HbmBreakdown:
    """Per-core HBM of a training step (module docstring); zero1_ranks > 1: ZeRO-1 over that many ranks."""
    from trnlab.torch.data_parallel import zero1_elements
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"optimizer={optimizer!r}; valid: {sorted(OPTIMIZER_STATE_BYTES)}")
    n = trainable_params(model)
    size = torch.finfo(dtype).bits // 8
    mixed = dtype != torch.float32
    gradients = n * size + (n * FP32 if accumulation > 1 and mixed else 0)
    owned = zero1_elements(model, zero1_ranks) if zero1_ranks > 1 else n
    optimizer_bytes = owned * (OPTIMIZER_STATE_BYTES[optimizer] + (FP32 if mixed else 0))
    return HbmBreakdown(n * size, gradients, optimizer_bytes, int(activations_bytes), int(capacity_bytes))


# --- activations saved for backward ----------------------------------------------------------------
_ALIASES = {"view", "_unsafe_view", "permute", "transpose", "t", "expand", "unsqueeze", "squeeze", "slice",
            "select", "alias", "detach", "as_strided", "split", "split_with_sizes", "unbind", "reshape"}


def saved_activation_bytes(forward_graph: torch.fx.Graph, user_outputs: int, dtype: torch.dtype,
                           base_of=None) -> int:
    """Bytes of the tensors an AOTAutograd forward graph saves for backward (its outputs after the
    first `user_outputs`), on the device: floating tensors in the compute dtype, views of a graph input
    (a parameter, the token ids) and repeated storages counted once or not at all. base_of(node) -> the
    node whose storage is kept for a saved tensor (default: the storage it views)."""
    base_of = base_of or _storage_base
    out = next(n for n in forward_graph.nodes if n.op == "output")
    flat = out.args[0] if isinstance(out.args[0], (list, tuple)) else [out.args[0]]
    seen, total = set(), 0
    for node in flat[user_outputs:]:
        if not isinstance(node, torch.fx.Node):
            continue
        base = base_of(node)
        if base.op == "placeholder" or base in seen:
            continue
        seen.add(base)
        total += _device_bytes(base.meta.get("val"), dtype)
    return total


def _storage_base(node: torch.fx.Node) -> torch.fx.Node:
    while node.op == "call_function" and _op_name(node) in _ALIASES and node.all_input_nodes:
        node = node.all_input_nodes[0]
    return node


def _op_name(node) -> str:
    packet = getattr(node.target, "overloadpacket", None)
    return getattr(packet, "__name__", "") if packet is not None else ""


def _device_bytes(val, dtype: torch.dtype) -> int:
    if isinstance(val, (list, tuple)):
        return sum(_device_bytes(v, dtype) for v in val)
    if not isinstance(val, torch.Tensor):
        return 0
    size = torch.finfo(dtype).bits // 8 if val.is_floating_point() else min(val.element_size(), 4)
    return val.numel() * size


# --- FLOPs ----------------------------------------------------------------------------------------
def training_flops_per_token(params: int, layers: int, hidden: int, seq: int) -> float:
    """Model FLOPs per trained token as AWS computes training MFU (6N for forward and backward through
    the weights, 12 x layers x hidden x seq for attention scores and their weighted sums). Derived from
    AWS's trn1 training table (https://github.com/aws-neuron/aws-neuron-sdk/blob/master/about-neuron/benchmarks/trn1/training_data_decoder.csv):
    it reproduces the published 30.8% MFU of NxD Llama2-7B (tests/test_torch_trainer.py)."""
    return 6.0 * params + 12.0 * layers * hidden * seq


def model_shape(model: torch.nn.Module) -> tuple[int, int]:
    """(layers, hidden) of a built-in decoder / decoder layer or a transformers model."""
    cfg = getattr(model, "cfg", None) or getattr(getattr(model, "model", None), "cfg", None)
    if cfg is not None and hasattr(cfg, "hidden"):
        return (cfg.layers if hasattr(model, "blocks") else 1), cfg.hidden
    hf = getattr(model, "config", None) or getattr(getattr(model, "model", None), "config", None)
    if hf is not None:
        return int(hf.num_hidden_layers), int(hf.hidden_size)
    raise ValueError(f"cannot tell the layers and hidden size of {type(model).__name__}")


# --- the training loop ------------------------------------------------------------------------------
class NextTokenLoss(torch.nn.Module):
    """forward(input_ids, labels) -> mean next-token cross-entropy of a logits model (the loss and its
    backward run on the chip with the model)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels):
        logits = self.model(input_ids)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


@dataclass
class StepTiming:
    forward_s: float
    backward_s: float
    optimizer_s: float
    hw_pe_s: float            # Tensor-engine work at peak rate (HFU numerator), recompute included
    instructions: int
    collectives_s: float = 0.0   # data parallelism: collective time on the critical path (not overlapped)

    @property
    def step_s(self) -> float:
        return self.forward_s + self.backward_s + self.optimizer_s + self.collectives_s


@dataclass
class TrainResult:
    model: str
    target: str
    dtype: str
    batch: int
    seq: int
    checkpointing: str
    optimizer: str
    losses: list
    eager_losses: list
    timing: StepTiming                 # of the last step
    hbm: HbmBreakdown
    params: int
    flops_per_token: float
    peak_flops: float
    usd_per_hour: float
    instance: str
    instance_cores: int
    grad_check: dict
    ops: list                          # OpRecords of the last step: forward then backward
    mode: str = "numerics"
    wall_s: float = 0.0
    parallel: object = None            # data_parallel.DataParallelStep of the last step (dp > 1 or zero1)

    @property
    def dp(self) -> int:
        return self.parallel.dp if self.parallel is not None else 1

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.timing.step_s if self.timing.step_s else 0.0

    @property
    def mfu(self) -> float:
        return self.tokens_per_s * self.flops_per_token / (self.peak_flops * self.dp)

    @property
    def hfu(self) -> float:
        return self.timing.hw_pe_s / self.timing.step_s if self.timing.step_s else 0.0

    @property
    def usd_per_million_tokens(self) -> float:
        per_core_s = self.usd_per_hour / self.instance_cores / 3600.0 * self.dp
        return per_core_s / self.tokens_per_s * 1e6 if self.tokens_per_s else 0.0

    def to_dict(self) -> dict:
        t = self.timing
        return {"model": self.model, "target": self.target, "dtype": self.dtype, "batch": self.batch,
                "seq": self.seq, "checkpointing": self.checkpointing, "optimizer": self.optimizer,
                "mode": self.mode, "steps": len(self.losses), "losses": self.losses,
                "eager_losses": self.eager_losses, "step_ms": t.step_s * 1e3, "forward_ms": t.forward_s * 1e3,
                "backward_ms": t.backward_s * 1e3, "optimizer_ms": t.optimizer_s * 1e3,
                "tokens_per_s": self.tokens_per_s, "mfu": self.mfu, "hfu": self.hfu,
                "usd_per_million_tokens": self.usd_per_million_tokens, "params": self.params,
                "flops_per_token": self.flops_per_token, "instructions": t.instructions,
                "hbm": self.hbm.to_dict(), "grad_check": self.grad_check, "wall_s": self.wall_s,
                "ops": [{"op": o.op, "time_s": o.time_s, "instructions": o.instructions, "source": o.source}
                        for o in self.ops],
                **self._parallel_dict()}

    def _parallel_dict(self) -> dict:
        """ranks (the DP degree, as `trnlab model --tp` reports its TP ranks), collectives_us on the critical
        path and in total, each rank's timings, and the collectives' timeline."""
        p = self.parallel
        if p is None:
            return {"ranks": 1, "dp": 1, "zero1": False, "collectives_us": 0.0, "collectives_total_us": 0.0}
        d = p.to_dict()
        return {"ranks": p.dp, "dp": p.dp, "zero1": p.zero1, "system": p.system,
                "collectives_us": d["collectives_us"], "collectives_total_us": d["collectives_total_us"],
                "rank_timings": d["ranks"], "collectives": d["collectives"], "bucket_bytes": p.bucket_bytes,
                "backward_end_us": d["backward_end_us"], "gradient_sync_end_us": d["gradient_sync_end_us"]}


# --- models and data ------------------------------------------------------------------------------------
def build_for_training(name: str, *, seed: int = 0, checkpointing: str = "none"):
    """(module whose forward(input_ids, labels) returns the loss, vocab size) for a built-in name."""
    from trnlab.torch import hf, models
    if name in hf.TRAINING_BUILDERS:
        if checkpointing != "none":
            raise ValueError(f"--checkpointing {checkpointing} is for the built-in decoders, not {name}")
        model = hf.TRAINING_BUILDERS[name]("tiny", seed)
        return _HfWithLabels(model), hf.vocab(model)
    if name.endswith("-layer"):
        raise ValueError(f"{name} is one decoder layer on hidden states; `trnlab train` trains whole models "
                         "(benchmarks/train_estimate.py times one layer's training step)")
    model = models.set_checkpointing(models.build(name, seed=seed), checkpointing)
    return NextTokenLoss(model), model.cfg.vocab


class _HfWithLabels(torch.nn.Module):
    """A transformers model called with labels= (it computes its own loss); BERT gets masked-LM labels."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels):
        return self.model(input_ids=input_ids, labels=labels).loss


def training_batch(name: str, vocab: int, batch: int, seq: int, seed: int = 1):
    """(input_ids, labels): a fixed batch of random tokens (the loss falls as the model learns it).
    Built-in decoders get next-token labels; transformers causal LMs shift labels themselves; BERT gets
    15% of positions masked (label -100 elsewhere, PyTorch's ignore_index)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq + 1), generator=gen)
    if name == "hf-bert":
        inputs, labels = ids[:, :seq].clone(), ids[:, :seq].clone()
        masked = torch.rand(batch, seq, generator=gen) < 0.15
        masked[:, 0] = True                            # at least one label per row
        inputs[masked] = min(103, vocab - 1)           # BERT's [MASK] id
        labels[~masked] = -100
    elif name.startswith("hf-"):
        inputs = labels = ids[:, :seq]
    else:
        inputs, labels = ids[:, :seq], ids[:, 1:]
    return inputs, labels


# --- the loop -----------------------------------------------------------------------------------------
def train(name: str, *, target=None, steps: int = 10, batch: int = 1, seq: int = 64, dtype="bf16",
          checkpointing: str = "none", optimizer: str = "adamw", lr: float = 1e-3, progress=None, dp: int = 1,
          zero1: bool = False, system=None, bucket_bytes: int | None = None) -> TrainResult:
    """Train a built-in model for `steps` steps on one simulated NeuronCore: each step runs forward and
    backward (torch.compile with the trnlab backend) and the optimizer (trnlab.torch.optim) on the chip;
    eager fp32 PyTorch trains a copy beside it on the same batch. The model runs without dropout (random
    masks are not simulated). Timing-only estimates of real sizes: layer_step().

    dp > 1 (or zero1): data parallelism over dp ranks of `system` (default: the chip's training instance,
    as trnlab.torch.shard.resolve_system picks it): `batch` is the global batch, split into dp micro-batches;
    gradients all-reduced (zero1: reduce-scattered, optimizer sharded, parameters all-gathered) in buckets
    of bucket_bytes (default NxD's 512 MB) overlapping backward. See trnlab.torch.data_parallel."""
    if dp != 1 or zero1 or system is not None:
        return _train_dp(name, target=target, steps=steps, batch=batch, seq=seq, dtype=dtype,
                         checkpointing=checkpointing, optimizer=optimizer, lr=lr, progress=progress, dp=dp,
                         zero1=zero1, system=system, bucket_bytes=bucket_bytes)
    import copy
    import time as _time
    from trnlab.hw import get_chip
    from trnlab.torch import optim as sim_optim
    from trnlab.torch.api import as_dtype
    from trnlab.torch.train import begin_step, compile_train, last_training

    t0 = _time.perf_counter()
    chip, tdtype = get_chip(target), as_dtype(dtype)
    model, vocab = build_for_training(name, checkpointing=checkpointing)
    inputs, labels = training_batch(name, vocab, batch, seq)
    hbm_breakdown(model, tdtype, optimizer=optimizer, activations_bytes=0,
                  capacity_bytes=chip.hbm_bytes_per_core).check(name, chip.name)
    layers, hidden = model_shape(model.model)
    compiled = compile_train(model, target=chip.name, dtype=tdtype, check=False, name=name)
    opt = _optimizer(sim_optim, optimizer, model, lr, chip.name, True)
    ref = copy.deepcopy(model).float()
    ref_opt = _optimizer(torch.optim, optimizer, ref, lr)
    losses, eager_losses, grad_check, hbm = [], [], {}, None
    for step in range(steps):
        _tick(progress, f"step {step + 1}/{steps}: forward and backward on the simulated chip")
        begin_step()
        loss = compiled(inputs, labels)
        loss.backward()
        record = last_training()
        if hbm is None:
            hbm = _step_hbm(record, model, tdtype, optimizer, chip)
            hbm.check(name, chip.name)
        eager_loss, check = _eager_step(ref, ref_opt, model, inputs, labels, tdtype, first=step == 0)
        if check is not None:
            grad_check = check
        losses.append(float(loss.detach()))
        eager_losses.append(eager_loss)
        _tick(progress, f"step {step + 1}/{steps}: {optimizer} on the simulated chip")
        opt.step()
        opt.zero_grad()
    return _result(name, chip, tdtype, batch, seq, checkpointing, optimizer, model, (layers, hidden), record, opt,
                   hbm, losses, eager_losses, grad_check, "numerics", t0)


def _train_dp(name: str, *, target, steps, batch, seq, dtype, checkpointing, optimizer, lr, progress, dp, zero1,
              system, bucket_bytes) -> TrainResult:
    """train() over dp data-parallel ranks (trnlab.torch.data_parallel): every rank's forward and backward
    runs on its own simulated core on its micro-batch; the loss reported is the ranks' mean (the global
    batch's mean loss when every rank has as many labelled tokens; hf-bert's masked labels differ per rank,
    so there, as in any DP run, it and the gradients weight tokens a little differently from the whole
    batch); eager fp32 PyTorch trains on the whole global batch beside it."""
    import copy
    import time as _time
    from trnlab.torch import data_parallel as dpl
    from trnlab.torch import optim as sim_optim
    from trnlab.torch.api import as_dtype
    from trnlab.torch.shard import resolve_system
    from trnlab.torch.train import begin_step, compile_train, last_training

    t0 = _time.perf_counter()
    spec = resolve_system(system, target)
    chip, tdtype = spec.chip, as_dtype(dtype)
    dp = dpl.check_dp(dp, batch, spec)
    if zero1 and dp < 2:
        from trnlab.errors import OptionError
        raise OptionError(f"zero1 shards the optimizer over the data-parallel ranks: it needs dp >= 2, got dp={dp}")
    bucket = dpl.BUCKET_BYTES if bucket_bytes is None else _check_bucket(bucket_bytes)
    shards = dp if zero1 else 1
    model, vocab = build_for_training(name, checkpointing=checkpointing)
    inputs, labels = training_batch(name, vocab, batch, seq)
    hbm_breakdown(model, tdtype, optimizer=optimizer, activations_bytes=0, capacity_bytes=chip.hbm_bytes_per_core,
                  zero1_ranks=shards).check(name, chip.name)
    layers, hidden = model_shape(model.model)
    compiled = compile_train(model, target=chip.name, dtype=tdtype, check=False, name=name)
    params = [p for p in model.parameters() if p.requires_grad]
    if zero1:
        opt = dpl.Zero1Optimizer(params, dp, lambda ps: _optimizer(sim_optim, optimizer, ps, lr, chip.name, True),
                                 tdtype)
    else:
        opt = _optimizer(sim_optim, optimizer, model, lr, chip.name, True)
    ref = copy.deepcopy(model).float()
    ref_opt = _optimizer(torch.optim, optimizer, ref, lr)
    micro = list(zip(dpl.split_batch(inputs, dp), dpl.split_batch(labels, dp)))
    losses, eager_losses, grad_check, hbm = [], [], {}, None
    sync_op = "reduce-scatter" if zero1 else "all-reduce"
    for step in range(steps):
        records, rank_losses, rank_grads, syncs = [], [], [], []
        for r, (ids, lab) in enumerate(micro):
            _tick(progress, f"step {step + 1}/{steps}: rank {r + 1}/{dp} forward and backward on its simulated core")
            begin_step()
            loss = compiled(ids, lab)
            sync = dpl.GradientSync(sync_op, dp, spec, tdtype, bucket) if dp > 1 else None
            with dpl.gradient_sync(sync):         # the gradient collectives on the backward's timeline
                loss.backward()
            syncs.append(sync)
            records.append(last_training())
            rank_losses.append(float(loss.detach()))
            rank_grads.append([None if p.grad is None else p.grad.detach().clone() for p in params])
            model.zero_grad(set_to_none=True)
        if hbm is None:
            hbm = _step_hbm(records[0], model, tdtype, optimizer, chip, shards)
            hbm.check(name, chip.name)
        _tick(progress, f"step {step + 1}/{steps}: gradient " + ("reduce-scatter" if zero1 else "all-reduce"))
        blocks = dpl.reduce_scatter_mean(rank_grads, tdtype) if zero1 else None
        averaged = _assembled(blocks, params) if zero1 else dpl.all_reduce_mean(rank_grads, tdtype)
        for p, g in zip(params, averaged):
            p.grad = g
        eager_loss, check = _eager_step(ref, ref_opt, model, inputs, labels, tdtype, first=step == 0)
        if check is not None:
            grad_check = check
        losses.append(sum(rank_losses) / dp)
        eager_losses.append(eager_loss)
        _tick(progress, f"step {step + 1}/{steps}: {optimizer} on the simulated " + ("ranks" if zero1 else "chip"))
        if zero1:
            model.zero_grad(set_to_none=True)
            opt.step(blocks)
            last = opt.last_steps
        else:
            opt.step()
            opt.zero_grad()
            last = [opt.last_step] * dp          # same gradients and weights on every rank: one simulation
    size = dpl.dtype_bytes(tdtype)
    gather = tuple(dpl.pad_rows(p.detach(), dp).numel() * size for p in params) if zero1 else ()
    timeline = dpl.step_timeline(records, [s.latency_s for s in last], rank_losses, dtype=tdtype, system=spec,
                                 zero1=zero1, syncs=syncs if dp > 1 else (), bucket_bytes=bucket,
                                 gather_bytes=gather)
    runs = records[0].forwards + records[0].backwards
    timing = StepTiming(timeline.forward_s, timeline.backward_s, timeline.optimizer_s,
                        sum(r.hw_pe_s for r in runs), sum(r.instructions for r in runs) + last[0].instructions,
                        timeline.collectives_exposed_s)
    result = _result(name, chip, tdtype, batch, seq, checkpointing, optimizer, model, (layers, hidden), records[0],
                     _LastStep(last[0]), hbm, losses, eager_losses, grad_check, "numerics", t0)
    return dataclasses.replace(result, timing=timing, parallel=timeline)


@dataclass(frozen=True)
class _LastStep:
    last_step: object


def _check_bucket(bucket_bytes) -> int:
    from trnlab.errors import OptionError
    if not isinstance(bucket_bytes, int) or isinstance(bucket_bytes, bool) or bucket_bytes < 1:
        raise OptionError(f"bucket_bytes must be an integer >= 1, got {bucket_bytes!r}")
    return bucket_bytes


def _assembled(blocks: list, params: list) -> list:
    """The whole averaged gradient of each parameter from the ranks' ZeRO-1 blocks (on the host, for the
    gradient check: no rank holds it)."""
    out = []
    for i, p in enumerate(params):
        parts = [rank[i] for rank in blocks]
        if any(b is None for b in parts):
            out.append(None)
            continue
        rows = p.shape[0] if p.dim() else 1
        out.append(torch.cat(parts)[:rows].reshape(p.shape))
    return out


def _eager_step(ref, ref_opt, model, inputs, labels, dtype, *, first: bool) -> tuple:
    """The eager fp32 reference's step beside the simulated one: (its loss, and on the first step the gradient
    check of the model's gradients against it, else None)."""
    ref_loss = ref(inputs, labels)
    ref_loss.backward()
    check = _grad_check_dict(model, ref, inputs, labels, dtype) if first else None
    ref_opt.step()
    ref_opt.zero_grad()
    return float(ref_loss.detach()), check


def _grad_check_dict(model, ref, inputs, labels, dtype) -> dict:
    from trnlab.torch.api import dtype_name
    from trnlab.torch.train import GRAD_TOLERANCE
    tolerance = GRAD_TOLERANCE.get(dtype_name(dtype), 5e-2)
    worst, worst_param = _worst_grad_error(model, ref, tolerance)
    return {"max_rel_err": worst, "worst_param": worst_param, "tolerance": tolerance, "ok": worst <= tolerance,
            "eager_max_rel_err": _eager_error(ref, inputs, labels, dtype)}


def _step_hbm(record, model, dtype, optimizer: str, chip, zero1_ranks: int = 1) -> HbmBreakdown:
    """The step's HBM: the model's parameters, gradients and optimizer states, and the activations the
    recorded forward graph saves for backward."""
    saved = saved_activation_bytes(record.forward_runs[-1].program.graph, 1, dtype)
    return hbm_breakdown(model, dtype, optimizer=optimizer, activations_bytes=saved,
                         capacity_bytes=chip.hbm_bytes_per_core, zero1_ranks=zero1_ranks)


def _result(name, chip, dtype, batch, seq, checkpointing, optimizer, model, shape, record, opt, hbm, losses,
            eager_losses, grad_check, mode, t0) -> TrainResult:
    """A TrainResult from a step's graph reports (forward, backward) and the optimizer's last run."""
    import time as _time
    from trnlab.torch.api import dtype_name
    from trnlab.torch.report import chip_fields
    runs = record.forwards + record.backwards
    timing = StepTiming(sum(r.latency_s for r in record.forwards), sum(r.latency_s for r in record.backwards),
                        opt.last_step.latency_s, sum(r.hw_pe_s for r in runs),
                        sum(r.instructions for r in runs) + opt.last_step.instructions)
    fields = chip_fields(chip, dtype_name(dtype))
    layers, hidden = shape
    params = trainable_params(model)
    return TrainResult(name, chip.name, dtype_name(dtype), batch, seq, checkpointing, optimizer, losses,
                       eager_losses, timing, hbm, params, training_flops_per_token(params, layers, hidden, seq),
                       fields["peak_flops"], fields["usd_per_hour"], fields["instance"], fields["instance_cores"],
                       grad_check, [o for r in runs for o in r.ops], mode, _time.perf_counter() - t0)


def _optimizer(module, kind: str, model, lr: float, target=None, numerics=None):
    """AdamW (weight decay 0.01, PyTorch's default) or SGD with momentum 0.9, from `module` (torch.optim
    for eager, trnlab.torch.optim for the chip)."""
    extra = {} if target is None else {"target": target, "numerics": numerics}
    params = model.parameters() if isinstance(model, torch.nn.Module) else model
    if kind == "adamw":
        return module.AdamW(params, lr=lr, **extra)
    return module.SGD(params, lr=lr, momentum=0.9, **extra)


def _worst_grad_error(model, ref, tolerance: float) -> tuple[float, str]:
    """(largest error, its parameter) of model's gradients against ref's (eager fp32), each relative to
    the reference's largest magnitude; a ~zero true gradient is measured against train.ZERO_GRAD_FLOOR
    of the model's largest, as train.grad_check does."""
    from trnlab.torch.train import _floor, _grad_check
    ref_params = dict(ref.named_parameters())
    floor = _floor([p.grad for p in ref_params.values() if p.grad is not None])
    worst, name = 0.0, ""
    for pname, p in model.named_parameters():
        r = ref_params[pname].grad
        if r is None:
            continue
        err = _grad_check(pname, p.grad, r, tolerance, floor).max_rel_err
        if err >= worst:
            worst, name = err, pname
    return worst, name


def _eager_error(ref, inputs, labels, dtype) -> float:
    """The same gradients from eager PyTorch run in the compute dtype, against fp32: how far the dtype
    alone moves them, printed beside trnlab's error (0 for fp32)."""
    import copy
    if dtype == torch.float32:
        return 0.0
    low = copy.deepcopy(ref).to(dtype)
    low.zero_grad()
    low(inputs, labels).backward()
    return _worst_grad_error(low, ref, 1.0)[0]


def _tick(progress, text: str) -> None:
    if progress is not None:
        progress(text)


# --- one decoder layer's training step (estimates of real sizes) -------------------------------------------
class _LayerLoss(torch.nn.Module):
    """A decoder layer on hidden states with a scalar loss (mean square of its output), so backward
    computes every weight gradient and the input gradient a middle layer passes down."""

    def __init__(self, layer):
        super().__init__()
        self.model = layer

    def forward(self, x):
        return self.model(x).float().pow(2).mean()


def layer_step(name: str = "llama-8b-layer", *, target=None, batch: int = 1, seq: int = 4096, dtype="bf16",
               checkpointing: str = "none", optimizer: str = "adamw") -> TrainResult:
    """Timing-only training step (forward, backward, optimizer) of one built-in decoder layer at a real
    size, on shapes only (meta tensors): the per-layer figure whole-model and cluster plans build on."""
    import time as _time
    from trnlab.hw import get_chip
    from trnlab.torch import models
    from trnlab.torch.api import as_dtype

    t0 = _time.perf_counter()
    chip, tdtype = get_chip(target), as_dtype(dtype)
    layer = models.set_checkpointing(models.build_layer(name, meta=True), checkpointing)
    module = _LayerLoss(layer)
    x = torch.empty(batch, seq, layer.cfg.hidden, device="meta", requires_grad=True)
    record, opt = timing_only_step(module, (x,), target=chip.name, dtype=tdtype, name=name, optimizer=optimizer)
    hbm = _step_hbm(record, module, tdtype, optimizer, chip)
    return _result(name, chip, tdtype, batch, seq, checkpointing, optimizer, module, (1, layer.cfg.hidden), record,
                   opt, hbm, [], [], {}, "timing-only", t0)


def timing_only_step(module, args: tuple, *, target, dtype, name: str, optimizer: str = "adamw"):
    """Forward, backward and optimizer of a shapes-only (meta) module through the training capture,
    timing only: (the step's Training record, the simulated optimizer). A non-scalar output is
    back-propagated from a gradient of its shape."""
    from trnlab.torch import optim as sim_optim
    from trnlab.torch.train import begin_step, compile_train, last_training
    compiled = compile_train(module, target=target, dtype=dtype, numerics=False, check=False, name=name)
    begin_step()
    out = compiled(*args)
    out.backward(None if out.dim() == 0 else torch.empty_like(out))
    record = last_training()
    opt = _optimizer(sim_optim, optimizer, module, 1e-4, target, False)
    opt.step()
    return record, opt
