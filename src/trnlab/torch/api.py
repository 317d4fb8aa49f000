"""trnlab.torch.compile: a PyTorch model compiled onto one simulated NeuronCore, checked, timed, priced."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils import _pytree as pytree

from trnlab.errors import HbmCapacityError
from trnlab.hw import get_chip
from trnlab.torch import capture
from trnlab.torch.executor import Program, RunResult
from trnlab.torch.lowering import check_compile_dtype
from trnlab.torch.report import BOUNDS, NumericsCheck, Report, chip_fields, fmt_bytes

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
          "fp16": torch.float16, "float16": torch.float16}


def as_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    return DTYPES[str(dtype).replace("torch.", "")]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


class CompiledModel:
    """Callable like the model; every call runs on a fresh simulated NeuronCore and refreshes `.report`.

    `fn, report = trnlab.torch.compile(...)` also works (the object unpacks to itself and its report)."""

    def __init__(self, model, example_inputs, *, target="trn2", dtype=torch.bfloat16, fallback=None,
                 numerics: bool = True, check: bool = True, name: str | None = None, tokens: int | None = None,
                 phase: str = "prefill", example_kwargs: dict | None = None, trace: bool = True,
                 run_example: bool = True):
        t0 = time.perf_counter()
        self.model = model
        self.chip = get_chip(target)
        self.dtype = as_dtype(dtype)
        check_compile_dtype(self.dtype)
        self.numerics = numerics
        self.check = check and numerics
        self.name = name or type(model).__name__
        self.tokens = tokens
        self.phase = phase
        self.trace = trace
        check_weights_fit(model, self.dtype, self.chip, self.name)
        ep = capture.export(model, tuple(example_inputs), self.dtype, example_kwargs)
        self.program = Program(ep, name=self.name, fallback=fallback)
        self._check_hbm()
        self.compile_s = time.perf_counter() - t0
        self.last_run: RunResult | None = None
        self.report: Report | None = None
        if run_example:
            self(*example_inputs)

    def _check_hbm(self) -> None:
        weights = self.program.weight_bytes()
        acts = self.program.activation_peak_bytes()
        limit = self.chip.hbm_bytes_per_core
        if weights + acts > limit:
            raise HbmCapacityError(
                f"{self.name} does not fit in the HBM of one {self.chip.name} NeuronCore: weights "
                f"{fmt_bytes(weights)} ({weights} B) + peak activations {fmt_bytes(acts)} ({acts} B) = "
                f"{weights + acts} B > {fmt_bytes(limit)} ({limit} B)", required=weights + acts, limit=limit)

    def __iter__(self):
        return iter((self, self.report))

    def __call__(self, *inputs, progress=None):
        run = self.program.run(inputs, target=self.chip, numerics=self.numerics, trace=self.trace, progress=progress)
        self.last_run = run
        self.report = self._report(run, inputs)
        return run.outputs

    def _report(self, run: RunResult, inputs) -> Report:
        name = dtype_name(self.dtype)
        m = run.machine
        busy = {}
        for unit, secs in getattr(m.scheduler, "busy", {}).items():
            key = "dma" if "dma" in str(unit) else str(unit)
            busy[key] = busy.get(key, 0.0) + secs
        busy["dma"] = busy.get("dma", 0.0) / max(1, m.chip.dma_queues)    # mean over the 16 queues
        n_ops = max(1, len(run.ops))
        fallbacks = [{"op": r.op, "source": r.source, "share": 1 / n_ops, "host_s": r.host_s}
                     for r in run.fallbacks]
        rep = Report(model=self.name, dtype=name, tokens=self.tokens or count_tokens(inputs),
                     latency_s=run.latency_s, model_flops=sum(o.model_flops for o in run.ops),
                     hw_flops=m.scheduler.work.pe_flops, hw_pe_s=m.scheduler.work.hfu_s, weights_bytes=self.program.weight_bytes(),
                     activation_peak_bytes=self.program.activation_peak_bytes(),
                     instructions=sum(m.stats.instructions.values()), ops=run.ops, fallbacks=fallbacks,
                     engine_busy=busy, mode="numerics" if self.numerics else "timing-only", phase=self.phase,
                     wall_s=run.wall_s, compile_s=self.compile_s, **chip_fields(self.chip, name))
        if self.check:
            rep.numerics = compare(self.model, inputs, run.outputs, name)
        return rep


def compile(model, example_inputs, *, target="trn2", dtype=torch.bfloat16, fallback=None, numerics=True,
            check=True, name=None, tokens=None, trace=True) -> CompiledModel:
    """Compile `model` for one simulated NeuronCore and run it once on example_inputs.

    Returns a callable CompiledModel; its `.report` holds the per-op table, latency, MFU, HBM use,
    tokens/s, $/M tokens and (numerics=True) the comparison with eager fp32 PyTorch.
    fallback='cpu' runs ops without a lowering on the host (named in the report) instead of raising
    UnsupportedOperatorError. numerics=False is the timing-only mode (shapes only, e.g. meta tensors)."""
    return CompiledModel(model, example_inputs, target=target, dtype=dtype, fallback=fallback, numerics=numerics,
                         check=check, name=name, tokens=tokens, trace=trace)


def count_tokens(inputs) -> int:
    """batch x seq of the first integer input (token ids), else the leading dims of the first tensor."""
    tensors = [x for x in pytree.tree_flatten(inputs)[0] if isinstance(x, torch.Tensor)]
    ids = [t for t in tensors if not t.is_floating_point() and t.ndim == 2]
    if ids:
        return int(ids[0].numel())
    if tensors:
        t = tensors[0]
        return int(np.prod(t.shape[:-1])) if t.ndim >= 2 else int(t.shape[0]) if t.ndim else 1
    return 1


def check_weights_fit(model, dtype, chip, name) -> None:
    """Refuse before capture when the parameters alone exceed one NeuronCore's HBM."""
    total = 0
    for p in list(model.parameters()) + list(model.buffers()):
        size = 2 if (p.is_floating_point() and dtype in (torch.bfloat16, torch.float16)) else p.element_size()
        total += p.numel() * size
    limit = chip.hbm_bytes_per_core
    if total > limit:
        raise HbmCapacityError(
            f"{name} weights need {fmt_bytes(total)} ({total} B) in {dtype_name(dtype)}, more than the "
            f"{fmt_bytes(limit)} ({limit} B) of HBM of one {chip.name} NeuronCore "
            f"({fmt_bytes(chip.hbm_bytes)} per chip / {chip.cores_per_chip} cores)", required=total, limit=limit)


def compare(model, inputs, outputs, dtype: str) -> list[NumericsCheck]:
    """Each output vs eager fp32 PyTorch: max abs error and error relative to the output's max magnitude."""
    model = model.eval()
    ref_inputs = [x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs]
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        import copy
        model = copy.deepcopy(model).float()
    with torch.no_grad():
        ref = model(*ref_inputs)
    ref_flat = [r for r in pytree.tree_flatten(_plain(ref))[0] if isinstance(r, torch.Tensor)]
    out_flat = [o for o in pytree.tree_flatten(_plain(outputs))[0] if isinstance(o, torch.Tensor)]
    bound = BOUNDS.get(dtype, 5e-2)
    checks = []
    for i, (o, r) in enumerate(zip(out_flat, ref_flat)):
        if not r.is_floating_point():
            exact = bool(torch.equal(o.to(r.dtype), r))
            checks.append(NumericsCheck(f"output[{i}] {list(r.shape)}", 0.0 if exact else 1.0,
                                        0.0 if exact else 1.0, 0.0, exact))
            continue
        err = (o.float() - r.float()).abs()
        max_abs = float(err.max()) if err.numel() else 0.0
        scale = float(r.float().abs().max()) if r.numel() else 0.0
        rel = max_abs / scale if scale else max_abs
        ok = bool(torch.isfinite(o.float()).all()) and rel <= bound
        checks.append(NumericsCheck(f"output[{i}] {list(r.shape)}", max_abs, rel, bound, ok))
    return checks


def _plain(x):
    """Model outputs as plain containers (HF ModelOutput -> tuple of tensors)."""
    if hasattr(x, "to_tuple"):
        return tuple(v for v in x.to_tuple() if isinstance(v, torch.Tensor))
    return x
