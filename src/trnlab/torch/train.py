"""Training on the simulated NeuronCore: forward AND backward graphs run on the chip (issue 10).

    compiled = torch.compile(model, backend="trnlab", options={"target": "trn2", "dtype": "bf16"})
    loss = compiled(ids, labels=ids).loss       # forward graph on the simulated chip
    loss.backward()                             # backward graph on the simulated chip: fills p.grad
    step = trnlab.torch.dynamo.last_training()  # Training: .forward / .backward Reports, .latency_s

    fn = trnlab.torch.compile(model, (ids,), train=True, dtype="bf16")   # the same capture
    result = trnlab.torch.train.grad_check(model, (ids,), labels=ids, dtype="bf16")
    result.ok, result.max_rel_err, result.params["lm_head.weight"].max_rel_err

Capture. When grad is enabled and a graph input requires grad (dynamo lifts parameters to graph
inputs), the "trnlab" backend hands the dynamo graph to AOTAutograd
(torch._dynamo.backends.common.aot_autograd) with PyTorch's core aten decompositions minus the ops
trnlab lowers itself (decompositions()). AOTAutograd splits it into a forward graph (user outputs +
the activations saved for backward) and a backward graph; each is a GraphRunner: compiled on its
first call into an executor.Program (one per input signature) and run on a fresh simulated
NeuronCore per call, exactly like an inference graph. Without grad the backend is unchanged.

numerics=False (timing only): graphs run on shapes only and return zeros (on the inputs' device,
so meta-device models work): latencies and reports are real, gradients are zeros.

dtype. The graph is re-traced in the compute dtype when it computes in another one or has symbolic
shapes (every floating tensor and dtype argument of every op becomes `dtype`; fp32 master
parameters are rounded to it as they enter the device). Outputs, saved activations and gradients
come back in the dtypes eager PyTorch has (fp32 grads for fp32 params).

Reports. Every graph run leaves a Report (trnlab.torch.report.Report: latency_s, per-op OpRecords
named after the graph's nodes, instructions, hw_flops = PE FLOPs) and its RunResult. They are gathered
per training step in a Training record (a forward graph run after a backward one starts a new step):
    last_training().forward / .backward          Report of the last forward / backward graph
    last_training().forwards / .backwards        every graph's Report of the step (graph breaks)
    last_training().forward_runs / backward_runs executor.RunResult of each
    last_training().latency_s                    simulated seconds of the whole step
Backward reports have phase "backward" and model name "<name> backward".

Known limits: dropout with p > 0 in training mode is refused (random masks are not simulated);
graphs with dynamic (symbolic) shapes are not compiled (one variant per concrete input signature is).
"""
from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree

from trnlab.errors import OptionError, RecompileLimitError
from trnlab.hw import get_chip
from trnlab.torch.api import (as_dtype, check_options, check_output, dtype_name, input_signature, run_report,
                              _check_values)
from trnlab.torch.executor import Program
from trnlab.torch.lowering import check_compile_dtype, registration
from trnlab.torch.report import NumericsCheck, Report

aten = torch.ops.aten

# Ops trnlab lowers whose decomposition training would still need (none: native_dropout is kept whole,
# so dropout with p > 0 in training mode is refused by name instead of as its random-number ops).
KEEP_DECOMPOSED: frozenset = frozenset()
# Kept whole (not decomposed): their lowerings are being written (helper t2) - fallback="cpu" until then.
KEEP_WHOLE = (aten._scaled_dot_product_flash_attention_for_cpu.default,
              aten._scaled_dot_product_flash_attention_for_cpu_backward.default)
# Allowed max error relative to the reference's largest magnitude, per compute dtype (grad_check).
# bf16: every intermediate of forward and backward is rounded to bf16 when written, and the Tensor
# engine multiplies bf16 operands (flash-attention backward's P and dS included), where eager CPU
# PyTorch keeps an op's internals in fp32. Measured on llama-tiny (seq 128): eager bf16 PyTorch moves
# the worst gradient by 2.3% of its largest magnitude, trnlab by 6.0%; fp32 agrees to 1e-6.
GRAD_TOLERANCE = {"float32": 1e-3, "bfloat16": 1e-1, "float16": 2e-2}


def decompositions() -> dict:
    """core_aten_decompositions() minus the ops trnlab lowers (and the SDPA flash ops, kept whole)."""
    table = torch._decomp.core_aten_decompositions()
    for op in list(table):
        packet = getattr(op, "overloadpacket", None)
        if op in KEEP_WHOLE or (registration(op) is not None and packet not in KEEP_DECOMPOSED):
            table.pop(op)
    return table


# --- training records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Training:
    """The graph runs of one training step (see the module docstring)."""
    forwards: list = field(default_factory=list)           # Report per forward graph run
    backwards: list = field(default_factory=list)          # Report per backward graph run
    forward_runs: list = field(default_factory=list)       # executor.RunResult per forward graph run
    backward_runs: list = field(default_factory=list)

    @property
    def forward(self) -> Report | None:
        return self.forwards[-1] if self.forwards else None

    @property
    def backward(self) -> Report | None:
        return self.backwards[-1] if self.backwards else None

    @property
    def latency_s(self) -> float:
        return sum(r.latency_s for r in self.forwards + self.backwards)


_steps: list = []


def last_training() -> Training | None:
    """The Training record of the most recent step run through the backend (None before any)."""
    return _steps[-1] if _steps else None


MAX_GRAPHS = 32        # forward runs kept per step (graph breaks); more without a backward start a new step


def begin_step() -> None:
    """The next forward graph run starts a new step record, even if the last step had no backward (a
    forward-only call, another model's): otherwise it is taken for a graph break of that step."""
    _steps.clear()


def _record(kind: str, report: Report, run) -> None:
    fresh = kind == "forward" and (_steps[-1].backwards or len(_steps[-1].forwards) >= MAX_GRAPHS) if _steps else True
    if fresh:
        _steps[:] = [Training()]               # only the last step: records keep no model alive
    step = _steps[-1]
    (step.forwards if kind == "forward" else step.backwards).append(report)
    (step.forward_runs if kind == "forward" else step.backward_runs).append(run)


# --- one AOTAutograd graph on the chip ----------------------------------------------------------------
@dataclass(frozen=True)
class _Variant:
    program: Program
    out_dtypes: tuple
    compile_s: float


class GraphRunner:
    """An AOTAutograd forward or backward graph: each call runs it on a fresh simulated NeuronCore."""

    def __init__(self, gm: torch.fx.GraphModule, kind: str, options: dict, mode=None):
        self.gm, self.kind, self.options, self.mode = strip_rng_wrappers(gm), kind, dict(options), mode
        self.variants: dict = {}
        self.last_run = None
        self.report: Report | None = None
        self._ready = False

    def _setup(self) -> None:
        # Checked at the first call: an error raised while dynamo compiles would be wrapped in its
        # BackendCompilerFailed.
        if self.mode not in (None, "default"):
            raise OptionError(f"torch.compile mode={self.mode!r} is not supported by the trnlab backend; "
                              "pass trnlab options with options={...}")
        check_options(self.options)
        o = self.options
        self.fallback, self.numerics, self.check = o.get("fallback"), o.get("numerics", True), o.get("check", True)
        _check_values(self.fallback, self.numerics, self.check)
        self.chip = get_chip(o.get("target"))
        self.dtype = as_dtype(o.get("dtype", torch.bfloat16))
        check_compile_dtype(self.dtype)
        base = o.get("name", "dynamo graph")
        self.name = base if self.kind == "forward" else f"{base} backward"
        self._ready = True

    def __call__(self, *args):
        if not self._ready:
            self._setup()
        variant = self._variant(args)
        # no per-instruction trace: nothing profiles training graphs yet, and keeping every event
        # triples the wall time of a large step
        hook = None
        if self.kind == "backward":        # data-parallel training: the gradient collectives on this timeline
            from trnlab.torch.data_parallel import active_sync
            sync = active_sync()
            hook = sync.issuer(variant.program) if sync is not None else None
        run = variant.program.run(list(args), target=self.chip, numerics=self.numerics, trace=False, hook=hook)
        leaves, spec = pytree.tree_flatten(run.outputs)
        if self.numerics:
            leaves = [x.to(d) if isinstance(x, torch.Tensor) and d is not None and x.dtype != d else x
                      for x, d in zip(leaves, variant.out_dtypes)]
        else:       # timing only: zeros where the inputs are (autograd needs real tensors; meta stays meta)
            device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
            leaves = [torch.zeros(x.shape, dtype=d, device=device) if isinstance(x, torch.Tensor) else x
                      for x, d in zip(leaves, variant.out_dtypes)]
        run.outputs = outputs = pytree.tree_unflatten(leaves, spec)
        tokens = _tokens(args)
        if self.kind == "backward" and _steps and _steps[-1].forwards:     # the step's tokens (ids feed forward)
            tokens = _steps[-1].forward.tokens
        rep = run_report(run, variant.program, self.chip, self.dtype, name=self.name, tokens=tokens,
                         phase=self.kind, numerics=self.numerics, compile_s=variant.compile_s)
        if self.check and self.numerics:
            rep.numerics = self._compare(args, leaves)
        self.last_run, self.report = run, rep
        _record(self.kind, rep, run)
        return list(outputs)

    def _variant(self, args) -> _Variant:
        key = input_signature(tuple(args), {})
        if key not in self.variants:
            t0 = time.perf_counter()
            graph = retrace(self.gm, args, self.dtype) if needs_retrace(self.gm, self.dtype) else self.gm
            program = Program(graph, name=self.name, fallback=self.fallback)
            out_node = next(n for n in self.gm.graph.nodes if n.op == "output")
            vals = [n.meta.get("val") if isinstance(n, torch.fx.Node) else None
                    for n in pytree.tree_flatten(out_node.args[0])[0]]
            dtypes = tuple(v.dtype if isinstance(v, torch.Tensor) else None for v in vals)
            self.variants[key] = _Variant(program, dtypes, time.perf_counter() - t0)
        return self.variants[key]

    def _compare(self, args, leaves) -> list[NumericsCheck]:
        """Each output vs the same graph run by eager PyTorch in fp32 on the same inputs."""
        ref_args = [a.detach().float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        with torch.no_grad():
            ref = pytree.tree_flatten(run_fp32(self.gm, ref_args))[0]
        bound = GRAD_TOLERANCE.get(dtype_name(self.dtype), 5e-2)
        return [check_output(f"{self.kind} output[{i}] {list(r.shape)}", o, r, bound)
                for i, (o, r) in enumerate(zip(leaves, ref)) if isinstance(r, torch.Tensor)]


def _tokens(args) -> int:
    ids = [a for a in args if isinstance(a, torch.Tensor) and not a.is_floating_point() and a.ndim == 2]
    return int(ids[0].numel()) if ids else 1


def strip_rng_wrappers(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Activation checkpointing wraps ops PyTorch tags as random (SDPA's flash op: it takes a dropout
    probability) in run_and_save_rng_state / run_with_rng_state, so that recomputation replays the
    same random numbers. trnlab refuses dropout > 0, so those ops draw none: they are called directly
    (the saved "state" becomes a 0-d placeholder value nothing reads)."""
    from torch._prims.rng_prims import run_and_save_rng_state, run_with_rng_state
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (run_and_save_rng_state, run_with_rng_state):
            continue
        saving = node.target is run_and_save_rng_state
        op, *args = node.args if saving else node.args[1:]
        with graph.inserting_before(node):
            call = graph.call_function(op, tuple(args), dict(node.kwargs))
            call.meta = dict(node.meta)
            if not saving:
                node.replace_all_uses_with(call)
            else:
                state = graph.call_function(aten.scalar_tensor.default, (0.0,))
                for user in list(node.users):          # getitem(node, 0): the state, 1: the op's result
                    user.replace_all_uses_with(state if user.args[1] == 0 else call)
                    graph.erase_node(user)
        graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm


# --- re-tracing in the compute dtype -------------------------------------------------------------------
def _caster(dtype):
    def cast(x):
        if dtype is None:
            return x
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
            return x.to(dtype)
        if isinstance(x, torch.dtype) and x.is_floating_point:
            return dtype
        return x
    return cast


# Arguments that stay fp32 whatever the compute dtype (PyTorch's kernels require it): op -> positions.
KEEP_FP32 = {aten._scaled_dot_product_flash_attention_for_cpu_backward.default: (5,)}     # logsumexp


class _CastInterpreter(torch.fx.Interpreter):
    def __init__(self, gm, dtype):
        super().__init__(gm)
        self.cast = _caster(dtype)
        self.fp32 = _caster(torch.float32 if dtype is not None else None)

    def call_function(self, target, args, kwargs):
        if isinstance(target, torch._ops.OpOverload):
            keep = KEEP_FP32.get(target, ())
            args = tuple(self.fp32(a) if i in keep else pytree.tree_map(self.cast, a) for i, a in enumerate(args))
            kwargs = pytree.tree_map(self.cast, kwargs)
        return super().call_function(target, args, kwargs)


def _fp32_inputs(gm) -> set:
    """Positions of the placeholders used only where fp32 is kept (KEEP_FP32)."""
    out = set()
    for i, node in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        uses = [(u, [k for k, a in enumerate(u.args) if a is node]) for u in node.users]
        if uses and all(u.target in KEEP_FP32 and set(ks) <= set(KEEP_FP32[u.target]) for u, ks in uses):
            out.add(i)
    return out


def needs_retrace(gm: torch.fx.GraphModule, dtype) -> bool:
    """False when gm already computes in dtype on static shapes (AOTAutograd's graph is run as it is)."""
    for node in gm.graph.nodes:
        vals = node.meta.get("val")
        for v in vals if isinstance(vals, (tuple, list)) else [vals]:
            if isinstance(v, torch.SymInt) or (isinstance(v, torch.Tensor) and (
                    any(isinstance(d, torch.SymInt) for d in v.shape) or v.is_floating_point() and v.dtype != dtype)):
                return True
        if node.op != "output" and "val" not in node.meta:
            return True
    return False


def retrace(gm: torch.fx.GraphModule, args, dtype) -> torch.fx.GraphModule:
    """gm re-traced on fake tensors with every floating op in `dtype` (None: as captured); nodes keep
    the model's source lines."""
    from torch.fx.experimental.proxy_tensor import make_fx
    cast = _caster(dtype)
    keep = _fp32_inputs(gm)
    inputs = [cast(a) if isinstance(a, torch.Tensor) and i not in keep else a for i, a in enumerate(args)]
    with torch.fx.traceback.preserve_node_meta(), torch.no_grad():
        return make_fx(lambda *xs: _CastInterpreter(gm, dtype).run(*xs), tracing_mode="fake")(*inputs)


def run_fp32(gm, args):
    """gm run by eager PyTorch with every floating op in fp32 (the numerics check's reference)."""
    return _CastInterpreter(gm, torch.float32).run(*args)


# --- the AOTAutograd backend ----------------------------------------------------------------------------
def needs_training(example_inputs) -> bool:
    return torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in example_inputs)


def training_backend(gm, example_inputs, options: dict, mode=None):
    """AOTAutograd over gm; its forward and backward graphs run on the simulated chip."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def compiler(kind):
        def compile_graph(graph, _example):
            return make_boxed_func(GraphRunner(graph, kind, options, mode))
        return compile_graph

    backend = aot_autograd(fw_compiler=compiler("forward"), bw_compiler=compiler("backward"),
                           decompositions=decompositions())
    return backend(gm, example_inputs)


# torch.compile recompiles a forward for every new set of guards (shapes, dtypes, ...) up to its limit (8 by
# default, per code object, so models of one class add up), then runs it in eager PyTorch with a log warning:
# steps would silently leave the simulated chip. trnlab's training captures get a higher limit and fail loudly.
RECOMPILE_LIMIT = 64


def compile_train(model, *, target=None, dtype=torch.bfloat16, fallback=None, numerics=True, check=True, name=None):
    """torch.compile(model) with the trnlab backend's training capture (see trnlab.torch.compile(train=True)).
    A call that would recompile the forward past RECOMPILE_LIMIT raises RecompileLimitError instead of running
    it in eager PyTorch."""
    from trnlab.torch.dynamo import trnlab_backend
    label = name or type(model).__name__
    options = {"target": target, "dtype": dtype, "fallback": fallback, "numerics": numerics, "check": check,
               "name": label}

    def backend(gm, example_inputs):
        return trnlab_backend(gm, example_inputs, options=options)
    compiled = torch.compile(model, backend=backend)
    forward = compiled.forward

    def guarded(*args, **kwargs):
        from torch._dynamo.exc import FailOnRecompileLimitHit
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True):
                return forward(*args, **kwargs)
        except FailOnRecompileLimitHit:
            raise RecompileLimitError(
                f"{label}: torch.compile has compiled this forward {RECOMPILE_LIMIT} times (its recompile limit, "
                f"counted over every model of the class in this process); one more would run the step in eager "
                f"PyTorch instead of on the simulated NeuronCore. Inputs whose shapes or dtypes change from call "
                f"to call cause recompiles: keep them fixed, or call torch._dynamo.reset() between models") from None
    compiled.forward = guarded
    return compiled


# --- gradient check ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GradCheck:
    """One fwd+bwd on the chip vs eager fp32 PyTorch: errors relative to the reference's max magnitude."""
    loss: NumericsCheck
    params: dict                  # parameter name -> NumericsCheck of its .grad
    tolerance: float
    dtype: str
    training: Training            # the step's forward / backward reports

    @property
    def max_rel_err(self) -> float:
        return max([self.loss.max_rel_err] + [c.max_rel_err for c in self.params.values()])

    @property
    def ok(self) -> bool:
        return self.loss.ok and all(c.ok for c in self.params.values())


# A parameter whose true gradient is ~0 (BERT's key biases: softmax ignores a shift of all scores)
# has a reference made of rounding noise; its error is measured against this fraction of the
# model's largest gradient magnitude instead of its own.
ZERO_GRAD_FLOOR = 1e-3


def _floor(reference_grads) -> float:
    """ZERO_GRAD_FLOOR x the largest magnitude among the reference gradients."""
    return ZERO_GRAD_FLOOR * max([float(r.abs().max()) for r in reference_grads if r.numel()] + [0.0])


def _grad_check(label, got, ref, tol, floor) -> NumericsCheck:
    got = torch.zeros_like(ref) if got is None else got.detach()
    c = check_output(label, got.float(), ref.float(), tol)
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    if scale >= floor or not c.max_abs_err < float("inf"):
        return c
    rel = c.max_abs_err / floor if floor else c.max_abs_err
    return NumericsCheck(c.output, c.max_abs_err, rel, tol, c.nonfinite_mismatches == 0 and rel <= tol,
                         c.nonfinite_mismatches)


class WithLoss(torch.nn.Module):
    """model + loss in one module, so the loss is computed (and differentiated) on the chip too."""

    def __init__(self, model, labels=None, loss_fn=None):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.labels_kwarg = labels is not None and "labels" in _parameters(model)
        self.register_buffer("labels", labels, persistent=False) if labels is not None else setattr(
            self, "labels", None)

    def forward(self, *args, **kwargs):
        if self.labels_kwarg:
            kwargs["labels"] = self.labels
        out = self.model(*args, **kwargs)
        if self.loss_fn is not None:
            return self.loss_fn(out)
        if getattr(out, "loss", None) is not None:
            return out.loss
        logits = out if isinstance(out, torch.Tensor) else out[0]
        if self.labels is not None:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.labels.reshape(-1))
        return logits.float().pow(2).mean()


def _parameters(model) -> set:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def grad_check(model, inputs, *, target=None, dtype=torch.bfloat16, labels=None, loss_fn=None, fallback=None,
               kwargs: dict | None = None, tolerance: float | None = None) -> GradCheck:
    """One forward + backward of `model` through the trnlab backend and through eager fp32 PyTorch,
    both on copies of the model (the caller's .grad stay untouched).

    The loss: loss_fn(output) if given; else output.loss (HF models, labels passed as labels=);
    else cross-entropy of the output logits with `labels`; else mean of the squared output.
    tolerance: allowed error relative to the reference's max magnitude (default GRAD_TOLERANCE[dtype]);
    a gradient whose reference is below ZERO_GRAD_FLOOR x the model's largest gradient magnitude is
    measured against that floor instead (its reference is rounding noise around 0)."""
    dname = dtype_name(as_dtype(dtype))
    tol = GRAD_TOLERANCE.get(dname, 5e-2) if tolerance is None else tolerance
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    ref = WithLoss(copy.deepcopy(model).float(), labels, loss_fn)
    dev = WithLoss(copy.deepcopy(model), labels, loss_fn)
    ref_loss = ref(*inputs, **(kwargs or {}))
    ref_loss.backward()
    compiled = compile_train(dev, target=target, dtype=dtype, fallback=fallback, check=False,
                             name=type(model).__name__)
    begin_step()
    loss = compiled(*inputs, **(kwargs or {}))
    loss.backward()
    step = last_training()
    if step is None or not step.forwards or not step.backwards:
        raise RuntimeError("grad_check: the step did not run through the trnlab backend (dynamo fell back to "
                           "eager, e.g. its recompile limit was hit; call torch._dynamo.reset())")
    ref_params = dict(ref.model.named_parameters())
    pairs = {k: (p.grad, ref_params[k].grad) for k, p in dev.model.named_parameters() if ref_params[k].grad is not None}
    floor = _floor([r for _, r in pairs.values()])
    grads = {k: _grad_check(f"grad {k}", g, r, tol, floor) for k, (g, r) in pairs.items()}
    loss_check = check_output("loss", loss.detach().float().reshape(ref_loss.shape), ref_loss.detach().float(), tol)
    return GradCheck(loss_check, grads, tol, dname, step)
