"""Optimizers whose step runs on a simulated NeuronCore: AdamW and SGD as torch.optim.Optimizer subclasses,
plus clip_grad_norm_ and gradient accumulation over micro-batches.

    opt = trnlab.torch.optim.AdamW(model.parameters(), lr=1e-4, target="trn2", max_grad_norm=1.0)
    loss.backward(); opt.step()
    opt.last_step.latency_s, opt.state_bytes()          # simulated step time, HBM of master + states

Each step() runs the kernels of trnlab.kernels.optim for all parameters in one run on a fresh Machine:
gradients, parameters, master weights and optimizer states are in HBM when the step starts (placing
them costs no instructions), the step streams them through SBUF and writes them back.

Precision (AWS's mixed-precision recipe: bf16 parameters for compute, fp32 master weights and optimizer
states, https://awsdocs-neuron.readthedocs-hosted.com/en/latest/frameworks/torch/torch-neuronx/tutorials/training/bert.html):
  - fp32 parameter: updated in place in fp32 (it is its own master).
  - bf16/fp16 parameter, master_weights=True: the optimizer keeps an fp32 master (state "master"),
    updates it and writes param.data = the master rounded to the parameter's dtype.
  - bf16/fp16 parameter, master_weights=False: the update is written straight into the parameter
    (AWS's "full BF16"; use stochastic_rounding=True so that updates below half an ulp survive on
    average, https://awsdocs-neuron.readthedocs-hosted.com/en/latest/general/arch/neuron-features/rounding-modes.html).
  Optimizer states (exp_avg, exp_avg_sq, momentum_buffer) are always fp32.
stochastic_rounding=True: every fp32 -> bf16 write of the step rounds stochastically (the Machine's
mode, as NEURON_RT_STOCHASTIC_ROUNDING_EN=1 on a device, https://awsdocs-neuron.readthedocs-hosted.com/en/
latest/about-neuron/appnotes/torch-neuronx/migration-from-xla-downcast-bf16.html, which also describes the
fp32 master copy kept by the optimizer), seeded by (seed, step number): deterministic.
max_grad_norm: clip by the global L2 norm of all gradients first (torch.nn.utils.clip_grad_norm_
semantics); the scale is folded into the update on the device, p.grad is left as it was.
numerics=False: timing only; parameters may be meta tensors, every parameter counts as having a
gradient of its own dtype, and nothing is written back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from trnlab.core import dtypes as dt
from trnlab.core.machine import Machine, running
from trnlab.errors import DtypeError, OptionError
from trnlab.hw import graph_chip
from trnlab.kernels import optim as ko
from trnlab.nki.tensor import NkiTensor
from trnlab.runtime import timing_model

_DEVICE = {torch.float32: dt.float32, torch.bfloat16: dt.bfloat16, torch.float16: dt.float16}


@dataclass(frozen=True)
class StepReport:
    """One simulated optimizer run (a step, a clip or an accumulation)."""
    kind: str                 # "adamw" | "sgd" | "clip_grad_norm" | "accumulate"
    target: str
    mode: str                 # "numerics" | "timing-only"
    n_tensors: int
    n_elements: int
    latency_s: float          # simulated time of the run (scheduled makespan)
    instructions: int
    dma_bytes: int            # bytes the run's DMAs moved (HBM <-> SBUF)
    state_bytes: int          # HBM bytes of master weights + optimizer states (0 for clip/accumulate)
    grad_norm: float | None   # total gradient norm when clipping (None in timing-only mode)
    wall_s: float

    def __str__(self) -> str:
        return (f"{self.kind} on {self.target} ({self.mode}): {self.n_tensors} tensors, {self.n_elements:,} "
                f"elements, {self.latency_s * 1e3:.3f} ms simulated, {self.instructions:,} instructions, "
                f"{self.dma_bytes / 1e6:.1f} MB moved, states {self.state_bytes / 1e6:.1f} MB, wall {self.wall_s:.2f} s")


# --- host <-> HBM -----------------------------------------------------------------------------------

def _device_dtype(t: torch.Tensor, what: str):
    try:
        return _DEVICE[t.dtype]
    except KeyError:
        raise DtypeError(f"{what}: dtype {t.dtype} is not supported by trnlab.torch.optim; parameters and "
                         f"gradients must be float32, bfloat16 or float16") from None


def _place(m: Machine, value: torch.Tensor | None, name: str, *, shape=None, dtype=None):
    """A host tensor in HBM (a copy), or, with value None or timing only, a tensor of that shape/dtype.
    The parameter's shape is kept (0-d as [1]): the timing model tracks hazards on rows of the
    storage, and a flat 1-D storage of a large tensor would cost it many more buckets per tile."""
    shape = tuple(value.shape if shape is None else shape) or (1,)
    if value is not None and m.numerics:
        v = value.detach().cpu().contiguous().reshape(shape)
        arr = v.view(torch.int16).numpy().copy().view(dt.bfloat16) if v.dtype == torch.bfloat16 else v.numpy().copy()
        return m.hbm_tensor(arr, name, dtype=_DEVICE[v.dtype])
    ddt = dtype if dtype is not None else _DEVICE[value.dtype]
    return m.new_hbm(shape, ddt, name) if m.numerics else m.hbm_tensor(
        np.empty(shape, dtype=dt.storage(ddt)), name, dtype=ddt)


def _to_torch(t, torch_dtype, shape) -> torch.Tensor:
    arr = np.ascontiguousarray(t.numpy())
    if arr.dtype == dt.bfloat16:
        out = torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    else:
        out = torch.from_numpy(arr.copy())
    return out.to(torch_dtype).reshape(shape)


def _new_machine(target, numerics: bool, sr_rng=None) -> Machine:
    return Machine(graph_chip(target), numerics=numerics, scheduler=timing_model(True, False), tensor_class=NkiTensor,
                   stochastic_rounding=sr_rng)


def _report(kind, m: Machine, n_tensors, n_elements, state_bytes, grad_norm, t0) -> StepReport:
    return StepReport(kind, m.chip.name, "numerics" if m.numerics else "timing-only", n_tensors, n_elements,
                      float(m.scheduler.end), int(sum(m.stats.instructions.values())), int(m.stats.dma_bytes),
                      int(state_bytes), grad_norm, time.perf_counter() - t0)


@dataclass
class _Placed:
    param: torch.Tensor
    group: dict
    p: object                 # HBM: fp32 master or the parameter
    g: object
    p_low: object | None      # HBM: the parameter's low-precision copy written from the master
    states: dict              # name -> HBM fp32 state


def _clip(placed, max_norm: float, m: Machine):
    """Global-norm clip coefficient tile (and the norm, stored to HBM) from all gradients."""
    acc = ko.new_accumulator()
    for pl in placed:
        ko.sum_squares_into(acc, pl.g)
    norm = ko.total_norm(acc)
    norm_hbm = _place(m, None, "grad_norm", shape=(1,), dtype=dt.float32)
    ko.store_scalar(norm_hbm, norm)
    return ko.clip_coef(norm, max_norm), norm_hbm


# --- optimizers ------------------------------------------------------------------------------------------

class _SimOptimizer(torch.optim.Optimizer):
    kind = ""
    state_names: tuple = ()

    def __init__(self, params, defaults, *, target, master_weights, stochastic_rounding, seed, max_grad_norm,
                 numerics):
        super().__init__(params, defaults)
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise OptionError(f"max_grad_norm must be None or > 0, got {max_grad_norm!r}")
        self.target = target
        self.master_weights = bool(master_weights)
        self.stochastic_rounding = bool(stochastic_rounding)
        self.seed = int(seed)
        self.max_grad_norm = max_grad_norm
        self.numerics = bool(numerics)
        self.steps = 0
        self.last_step: StepReport | None = None

    # --- memory ---
    def _needs_master(self, p: torch.Tensor) -> bool:
        return self.master_weights and p.dtype != torch.float32

    def state_bytes(self) -> dict:
        """HBM bytes of the fp32 master weights and of each optimizer state (all parameters of the
        groups), and their 'total'."""
        out = {"master_weights": 0, **{k: 0 for k in self.state_names}}
        for group in self.param_groups:
            for p in group["params"]:
                n = p.numel()
                if self._needs_master(p):
                    out["master_weights"] += 4 * n
                for k in self._states_of(group):
                    out[k] += 4 * n
        out["total"] = sum(out.values())
        return out

    def _states_of(self, group) -> tuple:
        return self.state_names

    def load_state_dict(self, state_dict) -> None:
        """torch casts every floating state to its parameter's dtype on load; masters and optimizer
        states are fp32 by design (a bf16 parameter's master would lose its low bits), so they are
        restored from the saved values."""
        super().load_state_dict(state_dict)
        saved = state_dict["state"]
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            for k, v in saved.get(i, {}).items():
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    self.state[p][k] = v.detach().to(torch.float32).clone()

    # --- step ---
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        t0 = time.perf_counter()
        items = [(g, p) for g in self.param_groups for p in g["params"]
                 if p.grad is not None or not self.numerics]
        self.steps += 1
        sr = np.random.default_rng([self.seed, self.steps]) if self.stochastic_rounding else None
        m = _new_machine(self.target, self.numerics, sr)
        with running(m):
            placed = [self._place_param(m, group, p, i) for i, (group, p) in enumerate(items)]
            coef, norm_hbm = _clip(placed, float(self.max_grad_norm), m) if self.max_grad_norm and placed \
                else (None, None)
            for pl in placed:
                self._update(pl, coef)
        norm = None
        if self.numerics:
            for pl in placed:
                self._write_back(pl)
            if norm_hbm is not None:
                norm = float(norm_hbm.numpy()[0])
        n = sum(p.numel() for _, p in items)
        self.last_step = _report(self.kind, m, len(items), n, self.state_bytes()["total"], norm, t0)
        return loss

    def _place_param(self, m, group, p, i) -> _Placed:
        ddt = _device_dtype(p, f"parameter {i}")
        st = self.state[p]
        grad = p.grad
        gdt = _device_dtype(grad, f"gradient of parameter {i}") if grad is not None else ddt
        g = _place(m, grad, f"grad{i}", shape=p.shape, dtype=gdt)
        if self._needs_master(p):
            if self.numerics and "master" not in st:
                st["master"] = p.detach().float().clone()
            master = _place(m, st.get("master"), f"master{i}", shape=p.shape, dtype=dt.float32)
            p_low = _place(m, None, f"param{i}", shape=p.shape, dtype=ddt)
        else:
            master, p_low = _place(m, p, f"param{i}"), None
        states = {}
        for k in self._states_of(group):
            if self.numerics and k not in st and self._init_state(k):
                st[k] = torch.zeros(p.shape, dtype=torch.float32)
            states[k] = _place(m, st.get(k), f"{k}{i}", shape=p.shape, dtype=dt.float32)
        return _Placed(p, group, master, g, p_low, states)

    def _init_state(self, name: str) -> bool:
        return True

    def _write_back(self, pl: _Placed) -> None:
        p, st = pl.param, self.state[pl.param]
        if pl.p_low is not None:
            st["master"] = _to_torch(pl.p, torch.float32, p.shape)
            p.data.copy_(_to_torch(pl.p_low, p.dtype, p.shape))
        else:
            p.data.copy_(_to_torch(pl.p, p.dtype, p.shape))
        for k, t in pl.states.items():
            st[k] = _to_torch(t, torch.float32, p.shape)

    def _update(self, pl: _Placed, coef) -> None:
        raise NotImplementedError


class AdamW(_SimOptimizer):
    """torch.optim.AdamW (decoupled weight decay, bias correction, eps outside the sqrt; no amsgrad,
    no maximize) stepping on a simulated NeuronCore. See the module docstring for the options."""
    kind = "adamw"
    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, *, target=None,
                 master_weights=True, stochastic_rounding=False, seed=0, max_grad_norm=None, numerics=True):
        _check_hyper(lr=lr, eps=eps, weight_decay=weight_decay, beta1=betas[0], beta2=betas[1])
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay),
                         target=target, master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                         seed=seed, max_grad_norm=max_grad_norm, numerics=numerics)

    def _update(self, pl: _Placed, coef) -> None:
        st, group = self.state[pl.param], pl.group
        st["step"] = st.get("step", 0) + 1
        b1, b2 = group["betas"]
        hp = ko.AdamWHyper(group["lr"], b1, b2, group["eps"], group["weight_decay"], st["step"])
        ko.adamw_into(pl.p, pl.g, pl.states["exp_avg"], pl.states["exp_avg_sq"], hp, p_low=pl.p_low, scale=coef)


class SGD(_SimOptimizer):
    """torch.optim.SGD (momentum, dampening 0, optional nesterov, weight decay; no maximize) stepping on
    a simulated NeuronCore. See the module docstring for the options."""
    kind = "sgd"
    state_names = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 target=None, master_weights=True, stochastic_rounding=False, seed=0, max_grad_norm=None,
                 numerics=True):
        _check_hyper(lr=lr, momentum=momentum, weight_decay=weight_decay)
        if dampening != 0:
            raise OptionError(f"SGD: dampening must be 0 (the only value trnlab models), got {dampening!r}")
        if nesterov and momentum <= 0:
            raise OptionError(f"SGD: nesterov momentum requires momentum > 0, got momentum={momentum!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=0.0, weight_decay=weight_decay,
                                      nesterov=bool(nesterov)),
                         target=target, master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                         seed=seed, max_grad_norm=max_grad_norm, numerics=numerics)

    def _states_of(self, group) -> tuple:
        return self.state_names if group["momentum"] != 0 else ()

    def _init_state(self, name: str) -> bool:
        return False            # the momentum buffer starts as the first step's gradient (torch)

    def _update(self, pl: _Placed, coef) -> None:
        st, group = self.state[pl.param], pl.group
        first = "momentum_buffer" not in st if self.numerics else st.get("step", 0) == 0
        st["step"] = st.get("step", 0) + 1
        hp = ko.SGDHyper(group["lr"], group["momentum"], group["weight_decay"], group["nesterov"], first)
        ko.sgd_into(pl.p, pl.g, pl.states.get("momentum_buffer"), hp, p_low=pl.p_low, scale=coef)


def _check_hyper(**values) -> None:
    for name, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v) or v < 0:
            raise OptionError(f"invalid {name}: {v!r} (a finite number >= 0)")
        if name in ("beta1", "beta2") and not v < 1:
            raise OptionError(f"invalid {name}: {v!r} (must be in [0, 1))")


# --- clipping and accumulation on their own ------------------------------------------------------------

def clip_grad_norm_(parameters, max_norm: float, *, target=None, numerics: bool = True, return_report=False):
    """torch.nn.utils.clip_grad_norm_ (L2 norm) on the simulated chip: one norm over all gradients,
    each gradient scaled in place by min(max_norm / (norm + 1e-6), 1). Returns the total norm (a 0-d fp32
    tensor; NaN in timing-only mode), and the StepReport too when return_report."""
    t0 = time.perf_counter()
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None] if numerics else [p for p in params]
    m = _new_machine(target, numerics)
    with running(m):
        placed = [_Placed(None, {}, None, _place(m, g if numerics else None, f"grad{i}", shape=g.shape,
                                                  dtype=_device_dtype(g, f"gradient {i}")), None, {})
                  for i, g in enumerate(grads)]
        coef, norm_hbm = _clip(placed, float(max_norm), m)
        for pl in placed:
            ko.scale_into(pl.g, coef)
    norm = float("nan")
    if numerics:
        for g, pl in zip(grads, placed):
            g.copy_(_to_torch(pl.g, g.dtype, g.shape))
        norm = float(norm_hbm.numpy()[0])
    rep = _report("clip_grad_norm", m, len(grads), sum(g.numel() for g in grads), 0,
                  norm if numerics else None, t0)
    out = torch.tensor(norm, dtype=torch.float32)
    return (out, rep) if return_report else out


def accumulate_(accumulators, grads, *, target=None, numerics: bool = True, return_report=False):
    """accumulator += grad for each pair (fp32 accumulators, in place; grads fp32/bf16/fp16): gradient
    accumulation over micro-batches on the simulated chip. Returns the StepReport when return_report."""
    t0 = time.perf_counter()
    accs, gs = list(accumulators), list(grads)
    if len(accs) != len(gs):
        raise OptionError(f"accumulate_: {len(accs)} accumulators but {len(gs)} gradients")
    for i, (a, g) in enumerate(zip(accs, gs)):
        if a.dtype != torch.float32:
            raise DtypeError(f"accumulate_: accumulator {i} must be float32, got {a.dtype}")
        _device_dtype(g, f"accumulate_: gradient {i}")
    m = _new_machine(target, numerics)
    with running(m):
        pairs = [(_place(m, a, f"acc{i}"), _place(m, g, f"grad{i}")) for i, (a, g) in enumerate(zip(accs, gs))]
        for ta, tg in pairs:
            ko.accumulate_into(ta, tg)
    if numerics:
        for a, (ta, _) in zip(accs, pairs):
            a.copy_(_to_torch(ta, torch.float32, a.shape))
    rep = _report("accumulate", m, len(accs), sum(a.numel() for a in accs), 0, None, t0)
    return rep if return_report else None


__all__ = ["AdamW", "SGD", "StepReport", "clip_grad_norm_", "accumulate_"]
