"""Capture: torch.export at the aten level, PyTorch's decompositions for ops we do not lower, and
the graph analyses run before anything executes (unsupported ops, constant folding, fusions)."""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import re
import sys
import warnings
from dataclasses import dataclass, field

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils import _pytree as pytree

from trnlab.errors import UnsupportedOperatorError
from trnlab.torch.lowering import PRESERVED, refusal

aten = torch.ops.aten


def decomposition_table() -> dict:
    table = torch.export.default_decompositions()
    for op in PRESERVED:
        table.pop(op, None)
    return table


def export(model: torch.nn.Module, example_inputs: tuple, dtype: torch.dtype = torch.float32,
           kwargs: dict | None = None) -> ExportedProgram:
    """torch.export the model in eval mode (cast to dtype: bf16 mode runs the bf16 model, as on the device).

    The caller's module is left as it was: its train/eval flags are restored, the cast runs on a copy."""
    with eval_mode(model):
        if dtype != torch.float32 and _has_float_params(model):
            model = copy.deepcopy(model).to(dtype)
        inputs = tuple(_cast_input(x, dtype) for x in example_inputs)
        kwargs = {k: _cast_input(v, dtype) for k, v in (kwargs or {}).items()}
        with torch.no_grad():
            ep = torch.export.export(model, inputs, kwargs=kwargs or None, strict=False)
    with warnings.catch_warnings():
        # torch 2.13's own run_decompositions deep-copies a TreeSpec and trips its own deprecation
        # warning (typing_extensions LeafSpec); it is not about the user's model.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        return ep.run_decompositions(decomposition_table())


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """model.eval() for the duration, then every submodule's own training flag back."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield model.eval()
    finally:
        for m, training in flags:
            m.training = training


def _has_float_params(model) -> bool:
    return any(p.is_floating_point() for p in model.parameters())


def _cast_input(x, dtype):
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
        return x.to(dtype)
    return x


# --- source locations -----------------------------------------------------------------------------
_FILE_LINE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def source_line(node) -> str:
    """'file.py:LINE  code' of the model line that produced the node: the innermost frame outside
    torch and transformers (nn.Linear's forward is not the user's line); for a transformers model
    called directly, the innermost frame outside torch; else the innermost frame."""
    trace = node.meta.get("stack_trace") or ""
    frames = _FILE_LINE.findall(trace)
    if not frames:
        return "<unknown>"
    dirs = _library_dirs()
    user = [f for f in frames if not _under(f[0], dirs)]
    model = [f for f in frames if not _under(f[0], dirs[:1])]
    path, line, _, code = (user or model or frames)[-1]
    return f"{path}:{line}  {code.strip()}"


def _library_dirs() -> tuple:
    """The installed torch package's directory, then transformers' once it is imported (before that
    no frame can come from it; importing it here would cost seconds in runs that never use it)."""
    transformers = sys.modules.get("transformers")
    return _package_dirs(getattr(transformers, "__file__", None))


@functools.cache
def _package_dirs(transformers_file) -> tuple:
    dirs = [os.path.dirname(torch.__file__)] + ([os.path.dirname(transformers_file)] if transformers_file else [])
    return tuple(os.path.realpath(d) + os.sep for d in dirs)


@functools.cache
def _under(path: str, dirs: tuple) -> bool:
    """Inside one of the package directories (by location, not by a name in the path)."""
    return os.path.realpath(path).startswith(dirs)


def describe_args(node) -> str:
    parts = []
    for a in node.args:
        parts.append(_describe(a))
    return ", ".join(parts)


def _describe(a) -> str:
    if isinstance(a, torch.fx.Node):
        v = a.meta.get("val")
        if isinstance(v, torch.Tensor):
            return f"{str(v.dtype).replace('torch.', '')}{list(v.shape)}"
        return a.name
    if isinstance(a, (list, tuple)):
        return "[" + ", ".join(_describe(x) for x in a) + "]"
    return repr(a)


# --- analyses -------------------------------------------------------------------------------------
@dataclass
class GraphInfo:
    user_inputs: list          # placeholder nodes of user inputs, in call order
    state: dict                # placeholder node -> torch tensor (parameters, buffers, constants)
    params: set                # placeholder nodes that are parameters (weights)
    folded: set                # call nodes computed at compile time (no dependence on user inputs)
    outputs: list              # output nodes: user outputs in order, then the mutated values (if any)
    out_spec: object           # user outputs' tree; (that tree, [mutated values]) when forward mutates
    mutations: list = field(default_factory=list)   # (kind, target) per mutated value, see MUTATIONS
    mutable: dict = field(default_factory=dict)     # state placeholder -> FQN of a state forward mutates


# What forward may write to, as torch.export's graph signature lists it: eager PyTorch changes the
# module's buffer/parameter or the caller's input in place, so a compiled call writes the value back.
MUTATIONS = {OutputKind.BUFFER_MUTATION: "buffer", OutputKind.PARAMETER_MUTATION: "parameter",
             OutputKind.USER_INPUT_MUTATION: "input"}


def analyse(ep: ExportedProgram) -> GraphInfo:
    sig = ep.graph_signature
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
    state, params, user = {}, set(), []
    for node, spec in zip(placeholders, sig.input_specs):
        if spec.kind == InputKind.USER_INPUT:
            user.append(node)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            value = ep.state_dict.get(spec.target)
            if value is None:
                value = ep.constants[spec.target]
            state[node] = value
            if spec.kind == InputKind.PARAMETER:
                params.add(node)
        elif spec.kind in (InputKind.CONSTANT_TENSOR, InputKind.CUSTOM_OBJ):
            state[node] = ep.constants[spec.target]
        else:
            raise NotImplementedError(f"input kind {spec.kind} ({node.name})")
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    flat_out = list(out_node.args[0])
    outputs = [n for n, spec in zip(flat_out, sig.output_specs) if spec.kind == OutputKind.USER_OUTPUT]
    written = [(n, spec) for n, spec in zip(flat_out, sig.output_specs) if spec.kind in MUTATIONS]
    others = sorted({str(spec.kind) for spec in sig.output_specs}
                    - {str(k) for k in (*MUTATIONS, OutputKind.USER_OUTPUT, OutputKind.TOKEN)})
    if others:
        raise UnsupportedOperatorError(f"the captured graph has outputs of kind {', '.join(others)}; trnlab "
                                       "runs inference graphs (user outputs and in-place state updates) only")
    mutated = {spec.target for _, spec in written}
    mutable = {n: spec.target for n, spec in zip(placeholders, sig.input_specs)
               if n in state and spec.target in mutated}
    out_spec = ep.call_spec.out_spec
    if written:
        user_tree = pytree.tree_unflatten([0] * out_spec.num_leaves, out_spec)
        out_spec = pytree.tree_structure((user_tree, [0] * len(written)))
    folded = constant_nodes(ep.graph, set(user) | set(mutable))
    return GraphInfo(user, state, params, folded, outputs + [n for n, _ in written], out_spec,
                     [(MUTATIONS[spec.kind], spec.target) for _, spec in written], mutable)


def analyse_graph(gm: torch.fx.GraphModule) -> GraphInfo:
    """GraphInfo of a plain aten FX graph (an AOTAutograd forward or backward graph): every placeholder
    is a call input (parameters arrive as inputs), get_attr tensors are constants, the outputs are the
    leaves of the output tuple (None leaves, e.g. no gradient, and numbers, e.g. a size saved for
    backward, are returned as they are)."""
    user = [n for n in gm.graph.nodes if n.op == "placeholder"]
    state = {n: _attr(gm, n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    leaves, out_spec = pytree.tree_flatten(out_node.args[0])
    bad = [x for x in leaves if x is not None and not isinstance(x, (torch.fx.Node, int, float, bool))]
    if bad:
        raise UnsupportedOperatorError(f"the graph returns non-tensor values {bad!r}; trnlab runs graphs of "
                                       "tensors (static shapes)")
    folded = constant_nodes(gm.graph, set(user))
    return GraphInfo(user, state, set(), folded, leaves, out_spec)


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def constant_nodes(graph, dynamic_inputs: set) -> set:
    """Call nodes that depend neither on user inputs nor on state forward mutates (folded at compile
    time, like any compiler)."""
    dynamic = set(dynamic_inputs)
    folded = set()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        deps = node.all_input_nodes
        if any(d in dynamic for d in deps):
            dynamic.add(node)
        elif _cheap_to_fold(node):
            folded.add(node)
        else:
            dynamic.add(node)
    return folded


def _cheap_to_fold(node) -> bool:
    """Fold constant subgraphs, but never matmuls on weights (those run on the device)."""
    packet = getattr(node.target, "overloadpacket", None)
    return packet not in (aten.linear, aten.mm, aten.addmm, aten.bmm, aten.matmul, aten.embedding)


def unsupported(ep: ExportedProgram, info: GraphInfo, skip: set = frozenset()) -> list:
    """Every call node the device cannot run: (op, args description, source line, node, reason)."""
    missing = []
    for node in ep.graph.nodes:
        if node.op != "call_function" or node in info.folded or node in skip:
            continue
        reason = refusal(node)
        if reason:
            missing.append((str(node.target), describe_args(node), source_line(node), node, reason))
    return missing


def raise_unsupported(missing: list, model_name: str) -> None:
    ops = sorted({m[0] for m in missing})
    lines = [f"{len(missing)} operator(s) of {model_name} cannot run on the NeuronCore ({', '.join(ops)}); "
             "nothing was run. Pass fallback='cpu' to run them on the host instead:"]
    for op, args, src, _, reason in missing:
        lines.append(f"  {op}({args})  at {src}: {reason}")
    err = UnsupportedOperatorError("\n".join(lines))
    err.ops = [(op, args, src) for op, args, src, _, _ in missing]
    raise err
