"""The "trnlab" torch.compile backend: dynamo hands us an FX graph module, we compile it with
trnlab.torch.compile and run every call on the simulated NeuronCore.

    torch.compile(model, backend="trnlab", options={"target": "trn1", "dtype": torch.bfloat16})

Options: target, dtype, fallback ("cpu"), check (compare with eager), numerics. The report of the
last call is on `trnlab.torch.dynamo.last_compiled().report`.
"""
from __future__ import annotations

import torch

_compiled: list = []


def last_compiled():
    """The CompiledModel of the most recent graph the backend ran (None before any call)."""
    return _compiled[-1] if _compiled else None


def trnlab_backend(gm: torch.fx.GraphModule, example_inputs, options: dict | None = None, **_):
    from trnlab.torch.api import CompiledModel
    opts = dict(options or {})
    compiled_by_signature = {}

    def run(*args):
        # A dynamic-shape graph is called with many shapes; a trnlab Program is specialised to the
        # shapes it was compiled with, so compile once per input signature (on real inputs, not fake ones).
        key = _signature(args)
        if key not in compiled_by_signature:
            compiled_by_signature[key] = CompiledModel(
                gm, args, target=opts.get("target", "trn2"), dtype=opts.get("dtype", torch.bfloat16),
                fallback=opts.get("fallback"), numerics=opts.get("numerics", True),
                check=opts.get("check", True), name=opts.get("name", "dynamo graph"))
            _compiled.append(compiled_by_signature[key])
            return _as_tuple(compiled_by_signature[key].last_run.outputs)
        return _as_tuple(compiled_by_signature[key](*args))

    return run


def _signature(args) -> tuple:
    return tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else (type(a), a) for a in args)


def _as_tuple(outputs):
    return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)


def register_backend() -> None:
    from torch._dynamo.backends.registry import _BACKENDS, register_backend as register
    if "trnlab" not in _BACKENDS:
        register(name="trnlab")(trnlab_backend)
