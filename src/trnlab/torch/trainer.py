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
"""
from __future__ import annotations

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
                  capacity_bytes: int, accumulation: int = 1) -> HbmBreakdown:
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"optimizer={optimizer!r}; valid: {sorted(OPTIMIZER_STATE_BYTES)}")
    n = trainable_params(model)
    size = torch.finfo(dtype).bits // 8
    mixed = dtype != torch.float32
    gradients = n * size + (n * FP32 if accumulation > 1 and mixed else 0)
    optimizer_bytes = n * (OPTIMIZER_STATE_BYTES[optimizer] + (FP32 if mixed else 0))
    return HbmBreakdown(n * size, gradients, optimizer_bytes, int(activations_bytes), int(capacity_bytes))


# --- activations saved for backward ----------------------------------------------------------------
_ALIASES = {"view", "_unsafe_view", "permute", "transpose", "t", "expand", "unsqueeze", "squeeze", "slice",
            "select", "alias", "detach", "as_strided", "split", "split_with_sizes", "unbind", "reshape"}


def saved_activation_bytes(forward_graph: torch.fx.Graph, user_outputs: int, dtype: torch.dtype) -> int:
    """Bytes of the tensors an AOTAutograd forward graph saves for backward (its outputs after the
    first `user_outputs`), on the device: floating tensors in the compute dtype, views of a graph input
    (a parameter, the token ids) and repeated storages counted once or not at all."""
    out = next(n for n in forward_graph.nodes if n.op == "output")
    flat = out.args[0] if isinstance(out.args[0], (list, tuple)) else [out.args[0]]
    seen, total = set(), 0
    for node in flat[user_outputs:]:
        if not isinstance(node, torch.fx.Node):
            continue
        base = _storage_base(node)
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
    the weights, 12 x layers x hidden x seq for attention scores and their weighted sums):
    ../shared/reference trainium-scale.md section 2, reproducing AWS's trn1 NxD Llama2-7B 30.8%."""
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
class WithLoss(torch.nn.Module):
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

    @property
    def step_s(self) -> float:
        return self.forward_s + self.backward_s + self.optimizer_s


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

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.timing.step_s if self.timing.step_s else 0.0

    @property
    def mfu(self) -> float:
        return self.tokens_per_s * self.flops_per_token / self.peak_flops

    @property
    def hfu(self) -> float:
        return self.timing.hw_pe_s / self.timing.step_s if self.timing.step_s else 0.0

    @property
    def usd_per_million_tokens(self) -> float:
        per_core_s = self.usd_per_hour / self.instance_cores / 3600.0
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
                        for o in self.ops]}
