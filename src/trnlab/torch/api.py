"""trnlab.torch.compile: a PyTorch model compiled onto one simulated NeuronCore, checked, timed, priced.

Options (keyword arguments of trnlab.torch.compile; the same names in torch.compile's `options=`):
  target    chip preset: "trn1" | "trn2" | "trn3" (default: $NEURON_PLATFORM_TARGET_OVERRIDE, else "trn2")
  dtype     compute dtype on the device: "bf16" | "fp16" | "fp32" (or torch.bfloat16, torch.float16,
            torch.float32; default bf16). Outputs come back in the dtype eager PyTorch returns for the same
            inputs (an fp32 model returns fp32, a bf16 model bf16).
  fallback  None (default: ops without a lowering raise UnsupportedOperatorError before anything runs)
            | "cpu" (run them on the host with PyTorch, named in the report)
  numerics  True (default) | False: timing only (shapes only, e.g. meta tensors)
  check     True (default) | False: compare every call's outputs with eager fp32 PyTorch
  name      the model's name in the report (default: the class name)
Anything else (a misspelt name, fallback="gpu", a torch.compile mode) raises OptionError.

A CompiledModel is called like the model. Its forward's signature is enforced (a missing, extra or
unknown argument raises ModelInputError); a call with new shapes, dtypes or non-tensor values compiles
a new variant (kept, keyed by that input signature). Buffers, parameters and inputs that forward
changes in place are written back after every call, as eager PyTorch does. Compiling leaves the
model (train/eval flags, parameters, buffers) and the example inputs as they were.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils import _pytree as pytree

from trnlab.errors import HbmCapacityError, ModelInputError, OptionError
from trnlab.hw import get_chip
from trnlab.torch import capture
from trnlab.torch.executor import Program, RunResult
from trnlab.torch.lowering import check_compile_dtype
from trnlab.torch.report import BOUNDS, NumericsCheck, Report, chip_fields, fmt_bytes

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
          "fp16": torch.float16, "float16": torch.float16}
OPTIONS = ("target", "dtype", "fallback", "numerics", "check", "name")
FALLBACKS = (None, "cpu")


def as_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    key = str(dtype).replace("torch.", "")
    if key not in DTYPES:
        raise OptionError(f"dtype={dtype!r} is not a compute dtype of trnlab; valid: {sorted(DTYPES)} "
                          "(or torch.bfloat16, torch.float16, torch.float32)")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_options(options: dict) -> None:
    """Refuse option names outside OPTIONS (values are checked by CompiledModel)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise OptionError(f"unknown trnlab option(s) {unknown}; valid names: {list(OPTIONS)}")


def _check_values(fallback, numerics, check) -> None:
    if fallback not in FALLBACKS:
        raise OptionError(f"fallback={fallback!r} is not supported; valid values: {list(FALLBACKS)}")
    for key, value in (("numerics", numerics), ("check", check)):
        if not isinstance(value, bool):
            raise OptionError(f"{key}={value!r} must be True or False")


@dataclass(frozen=True)
class Variant:
    """One compiled input signature: the program, eager PyTorch's dtype of each output leaf, and the
    seconds its capture and analyses took."""
    program: Program
    out_dtypes: tuple
    compile_s: float


class CompiledModel:
    """Callable like the model; every call runs on a fresh simulated NeuronCore and refreshes `.report`.

    `fn, report = trnlab.torch.compile(...)` also works (the object unpacks to itself and its report)."""

    def __init__(self, model, example_inputs, *, target=None, dtype=torch.bfloat16, fallback=None,
                 numerics: bool = True, check: bool = True, name: str | None = None, tokens: int | None = None,
                 phase: str = "prefill", example_kwargs: dict | None = None, trace: bool = True,
                 run_example: bool = True):
        _check_values(fallback, numerics, check)
        self.model = model
        self.chip = get_chip(target)
        self.dtype = as_dtype(dtype)
        check_compile_dtype(self.dtype)
        self.fallback = fallback
        self.numerics = numerics
        self.check = check and numerics
        self.name = name or type(model).__name__
        self.tokens = tokens
        self.phase = phase
        self.trace = trace
        self.signature = _forward_signature(model)
        self.variants: dict = {}
        check_weights_fit(model, self.dtype, self.chip, self.name)
        if isinstance(example_inputs, torch.Tensor):     # one tensor, not a tuple of arguments
            example_inputs = (example_inputs,)
        args, kwargs = self._bind(tuple(example_inputs), example_kwargs or {})
        first = self._variant(args, kwargs)
        self.program, self.compile_s = first.program, first.compile_s
        self.last_run: RunResult | None = None
        self.report: Report | None = None
        if run_example:
            self._call(tuple(example_inputs), example_kwargs or {}, write_back=False)

    # --- inputs and variants ----------------------------------------------------------------------
    def _bind(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """The call in its canonical form (forward's positional args, then keyword-only ones)."""
        if self.signature is None:
            return tuple(args), dict(kwargs)
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ModelInputError(
                f"{self.name}: {exc}: forward{self.signature} was called with {_describe_call(args, kwargs)}"
            ) from None
        return bound.args, bound.kwargs

    def _variant(self, args: tuple, kwargs: dict) -> Variant:
        key = input_signature(args, kwargs)
        if key not in self.variants:
            t0 = time.perf_counter()
            ep = capture.export(self.model, args, self.dtype, kwargs)
            program = Program(ep, name=self.name, fallback=self.fallback)
            self._check_hbm(program)
            self.variants[key] = Variant(program, eager_dtypes(self.model, args, kwargs),
                                         time.perf_counter() - t0)
        return self.variants[key]

    def _check_hbm(self, program: Program) -> None:
        weights = program.weight_bytes()
        acts = program.activation_peak_bytes()
        limit = self.chip.hbm_bytes_per_core
        if weights + acts > limit:
            raise HbmCapacityError(
                f"{self.name} does not fit in the HBM of one {self.chip.name} NeuronCore: weights "
                f"{fmt_bytes(weights)} ({weights} B) + peak activations {fmt_bytes(acts)} ({acts} B) = "
                f"{weights + acts} B > {fmt_bytes(limit)} ({limit} B)", required=weights + acts, limit=limit)

    def __iter__(self):
        return iter((self, self.report))

    # --- calls ------------------------------------------------------------------------------------
    def __call__(self, *inputs, progress=None, **kwargs):
        """Run forward(*inputs, **kwargs) on a fresh simulated NeuronCore (`progress`, a callable ticked
        once per op, is trnlab's own keyword). In-place updates are written back when numerics=True."""
        return self._call(inputs, kwargs, progress=progress, write_back=True)

    def _call(self, inputs: tuple, kwargs: dict, *, progress=None, write_back: bool):
        args, kwargs = self._bind(inputs, kwargs)
        variant = self._variant(args, kwargs)
        self.program = program = variant.program
        info = program.info
        for node, fqn in info.mutable.items():          # the state forward changes: its current value
            info.state[node] = _state_tensor(self.model, fqn).detach().to(node.meta["val"].dtype)
        flat = pytree.tree_flatten((args, kwargs))[0]
        run = program.run(flat, target=self.chip, numerics=self.numerics, trace=self.trace, progress=progress)
        outputs, written = run.outputs, []
        if info.mutations:
            outputs, written = outputs
        run.outputs = outputs = cast_outputs(outputs, variant.out_dtypes)
        self.last_run = run
        self.report = self._report(run, args, kwargs, variant.compile_s)
        if write_back and self.numerics:
            self._write_back(info, written, flat)
        return outputs

    def _write_back(self, info, written: list, flat: list) -> None:
        """In-place updates of forward, applied to the caller's module and inputs like eager PyTorch."""
        inputs = {n.name: v for n, v in zip(info.user_inputs, flat)}
        with torch.no_grad():
            for (kind, target), value in zip(info.mutations, written):
                dst = inputs[target] if kind == "input" else _state_tensor(self.model, target)
                dst.copy_(value)

    def _report(self, run: RunResult, args: tuple, kwargs: dict, compile_s: float) -> Report:
        rep = run_report(run, self.program, self.chip, self.dtype, name=self.name,
                         tokens=self.tokens or count_tokens((args, kwargs)), phase=self.phase,
                         numerics=self.numerics, compile_s=compile_s)
        if self.check:
            rep.numerics = compare(self.model, args, run.outputs, dtype_name(self.dtype), kwargs)
        return rep


def run_report(run: RunResult, program: Program, chip, dtype: torch.dtype, *, name: str, tokens: int,
               phase: str, numerics: bool, compile_s: float) -> Report:
    """The Report of one Program run (per-op table, latency, FLOPs, engine busy time; no numerics check)."""
    dname = dtype_name(dtype)
    m = run.machine
    busy = {}
    for unit, secs in getattr(m.scheduler, "busy", {}).items():
        key = "dma" if "dma" in str(unit) else str(unit)
        busy[key] = busy.get(key, 0.0) + secs
    busy["dma"] = busy.get("dma", 0.0) / max(1, m.chip.dma_queues)    # mean over the 16 queues
    n_ops = max(1, len(run.ops))
    fallbacks = [{"op": r.op, "source": r.source, "share": 1 / n_ops, "host_s": r.host_s}
                 for r in run.fallbacks]
    return Report(model=name, dtype=dname, tokens=tokens,
                  latency_s=run.latency_s, model_flops=sum(o.model_flops for o in run.ops),
                  hw_flops=m.scheduler.work.pe_flops, hw_pe_s=m.scheduler.work.hfu_s,
                  weights_bytes=program.weight_bytes(), activation_peak_bytes=program.activation_peak_bytes(),
                  instructions=sum(m.stats.instructions.values()), ops=run.ops, fallbacks=fallbacks,
                  engine_busy=busy, mode="numerics" if numerics else "timing-only", phase=phase,
                  wall_s=run.wall_s, compile_s=compile_s, **chip_fields(chip, dname))


def compile(model, example_inputs, *, target=None, dtype=torch.bfloat16, fallback=None, numerics=True,
            check=True, name=None, tokens=None, trace=True, example_kwargs: dict | None = None,
            train: bool = False, tp: int | None = None, system=None, sequence_parallel: bool = False,
            dp: int | None = None):
    """Compile `model` for one simulated NeuronCore and run it once on example_inputs (a tuple of
    forward's positional arguments, or one tensor) and example_kwargs.

    Returns a callable CompiledModel; its `.report` holds the per-op table, latency, MFU, HBM use,
    tokens/s, $/M tokens and (check=True) the comparison with eager fp32 PyTorch. The options
    (target, dtype, fallback, numerics, check, name) are described in this module's docstring.

    train=True: the training capture instead (trnlab.torch.train): returns torch.compile(model) with
    the trnlab backend; calls run the forward graph on the simulated chip and return outputs whose
    .backward() runs the backward graph there too. Nothing runs at compile time (the options are
    checked); each step's reports are on trnlab.torch.dynamo.last_training().

    tp=N (and optionally system=, a name from trnlab.hw.systems or a SystemSpec): tensor parallelism over
    N NeuronCores of that system (trnlab.torch.shard; the collectives co-simulated on each rank's timeline);
    returns a ShardedModel whose ShardedReport adds ranks, collectives_us (on the critical path),
    collectives_total_us, rank_latency_us and the per-rank HBM use. sequence_parallel=True (with tp): reduce-scatter /
    all-gather over the sequence instead of all-reduce (Megatron sequence parallelism).

    dp=N: data parallelism, N replicas (each on one core, or on a TP group with tp=) serving 1/N of the batch
    each (trnlab.torch.replicas); returns a DataParallelModel whose report adds dp, ranks and per-rank
    latencies. For data-parallel training use trnlab.torch.trainer.train(dp=N) / `trnlab train --dp N`."""
    if train and (tp is not None or system is not None or dp is not None):
        raise OptionError("train=True with tp/system/dp is not supported: tensor and data parallelism here run "
                          "inference (prefill) graphs; data-parallel training is trnlab.torch.trainer.train(dp=N) "
                          "(`trnlab train --dp N`)")
    if sequence_parallel and tp is None:
        raise OptionError("sequence_parallel=True needs tp=N (N >= 2): it splits the sequence over the tensor-parallel "
                          "ranks, and without tp there are none (it would be ignored)")
    if train:
        from trnlab.torch.train import compile_train
        _check_values(fallback, numerics, check)
        check_compile_dtype(as_dtype(dtype))
        get_chip(target)
        return compile_train(model, target=target, dtype=dtype, fallback=fallback, numerics=numerics,
                             check=check, name=name)
    if dp is not None:
        from trnlab.torch.replicas import DataParallelModel
        return DataParallelModel(model, example_inputs, dp=dp, tp=tp, system=system, target=target, dtype=dtype,
                                 fallback=fallback, numerics=numerics, check=check, name=name, tokens=tokens,
                                 trace=trace, example_kwargs=example_kwargs,
                                 **({"sequence_parallel": sequence_parallel} if sequence_parallel else {}))
    if tp is not None or system is not None:
        from trnlab.torch.shard import ShardedModel
        return ShardedModel(model, example_inputs, tp=1 if tp is None else tp, system=system, target=target,
                            dtype=dtype, fallback=fallback, numerics=numerics, check=check, name=name,
                            tokens=tokens, trace=trace, example_kwargs=example_kwargs,
                            sequence_parallel=sequence_parallel)
    return CompiledModel(model, example_inputs, target=target, dtype=dtype, fallback=fallback, numerics=numerics,
                         check=check, name=name, tokens=tokens, trace=trace, example_kwargs=example_kwargs)


def input_signature(args: tuple, kwargs: dict) -> tuple:
    """What a compiled variant is specialised to: the call's structure, every tensor's shape, dtype and
    device, every other value (torch.export bakes those into the graph)."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    return (str(spec),) + tuple(_leaf_key(x) for x in leaves)


def _leaf_key(x):
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), x.dtype, x.device.type)
    try:
        hash(x)
        return (type(x), x)
    except TypeError:
        return (type(x), repr(x))


def _forward_signature(model):
    try:
        return inspect.signature(model.forward)
    except (AttributeError, TypeError, ValueError):
        return None


def _describe_call(args: tuple, kwargs: dict) -> str:
    def one(x):
        if isinstance(x, torch.Tensor):
            return f"{dtype_name(x.dtype)}{list(x.shape)}"
        return type(x).__name__ if isinstance(x, (list, tuple, dict)) else repr(x)
    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return f"({', '.join(parts)})"


def _state_tensor(model, fqn: str) -> torch.Tensor:
    try:
        return model.get_buffer(fqn)
    except AttributeError:
        return model.get_parameter(fqn)


def eager_dtypes(model, args: tuple, kwargs: dict) -> tuple:
    """The dtype eager PyTorch returns for each output leaf (None: not a tensor), from a run on fake
    tensors (no compute; the module's own parameters and buffers are not touched)."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode, torch.no_grad(), capture.eval_mode(model):
            fake = lambda x: mode.from_tensor(x) if isinstance(x, torch.Tensor) else x  # noqa: E731
            state = {k: fake(v) for k, v in [*model.named_parameters(), *model.named_buffers()]}
            out = torch.func.functional_call(model, state, *pytree.tree_map(fake, (args, kwargs)))
    except DataDependentOutputException:      # forward reads a value (.item()): run it for real, on copies
        clone = lambda x: x.detach().clone() if isinstance(x, torch.Tensor) else x  # noqa: E731
        with torch.no_grad(), capture.eval_mode(model):
            state = {k: clone(v) for k, v in [*model.named_parameters(), *model.named_buffers()]}
            out = torch.func.functional_call(model, state, *pytree.tree_map(clone, (args, kwargs)))
    return tuple(x.dtype if isinstance(x, torch.Tensor) else None for x in pytree.tree_flatten(out)[0])


def cast_outputs(outputs, dtypes: tuple):
    """Outputs in eager PyTorch's dtypes (the device computed in the compute dtype)."""
    leaves, spec = pytree.tree_flatten(outputs)
    if len(leaves) != len(dtypes):
        return outputs
    cast = [x.to(d) if isinstance(x, torch.Tensor) and d is not None and x.dtype != d else x
            for x, d in zip(leaves, dtypes)]
    return pytree.tree_unflatten(cast, spec)


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
            f"({fmt_bytes(chip.hbm_bytes)} per chip / {chip.cores_per_chip} cores); shard it over at least "
            f"{-(-total // limit)} NeuronCores with tensor parallelism (tp=N; trnlab model --tp N)",
            required=total, limit=limit)


def compare(model, args, outputs, dtype: str, kwargs: dict | None = None) -> list[NumericsCheck]:
    """Each output vs eager fp32 PyTorch: max abs error and error relative to the output's max magnitude.

    Eager runs on copies (of the module's parameters and buffers, in eval mode, and of the inputs):
    a forward that updates state in place must not change the caller's objects. NaN matches NaN and
    inf matches an inf of the same sign at the same position; a non-finite value on one side only fails."""
    state = {k: _ref_input(v) for k, v in [*model.named_parameters(), *model.named_buffers()]}
    ref_args, ref_kwargs = pytree.tree_map(_ref_input, (tuple(args), dict(kwargs or {})))
    with torch.no_grad(), capture.eval_mode(model):
        ref = torch.func.functional_call(model, state, ref_args, ref_kwargs)
    ref_flat = [r for r in pytree.tree_flatten(_plain(ref))[0] if isinstance(r, torch.Tensor)]
    out_flat = [o for o in pytree.tree_flatten(_plain(outputs))[0] if isinstance(o, torch.Tensor)]
    bound = BOUNDS.get(dtype, 5e-2)
    checks = [check_output(f"output[{i}] {list(r.shape)}", o, r, bound)
              for i, (o, r) in enumerate(zip(out_flat, ref_flat))]
    if len(out_flat) != len(ref_flat):
        checks.append(NumericsCheck(f"{len(out_flat)} outputs, eager returns {len(ref_flat)}",
                                    float("inf"), float("inf"), bound, False))
    return checks


def _ref_input(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().clone()
        return x.float() if x.is_floating_point() else x
    return x


def check_output(label: str, o: torch.Tensor, r: torch.Tensor, bound: float) -> NumericsCheck:
    if o.shape != r.shape:
        return NumericsCheck(f"{label} (got {list(o.shape)})", float("inf"), float("inf"), bound, False)
    if not r.is_floating_point():
        exact = bool(torch.equal(o.to(r.dtype), r))
        return NumericsCheck(label, 0.0 if exact else 1.0, 0.0 if exact else 1.0, 0.0, exact)
    o, r = o.float(), r.float()
    finite = torch.isfinite(o) & torch.isfinite(r)
    same = (o.isnan() & r.isnan()) | (torch.isinf(r) & (o == r))
    mismatches = int((~(finite | same)).sum())
    max_abs = float((o - r)[finite].abs().max()) if finite.any() else 0.0
    ref_finite = r[torch.isfinite(r)]
    scale = float(ref_finite.abs().max()) if ref_finite.numel() else 0.0
    rel = max_abs / scale if scale else max_abs
    return NumericsCheck(label, max_abs, rel, bound, mismatches == 0 and rel <= bound, mismatches)


def _plain(x):
    """Model outputs as plain containers (HF ModelOutput -> tuple of tensors)."""
    if hasattr(x, "to_tuple"):
        return tuple(v for v in x.to_tuple() if isinstance(v, torch.Tensor))
    return x
