"""The "trnlab" torch.compile backend: dynamo hands us an FX graph module, we compile it with
trnlab.torch.compile and run every call on the simulated NeuronCore.

    torch.compile(model, backend="trnlab", options={"target": "trn1", "dtype": torch.bfloat16})

Options: target, dtype, fallback (None | "cpu"), check (compare with eager), numerics, name; they are
described in trnlab.torch.api. Any other name, or a torch.compile `mode`, raises OptionError at the
first call. The report of the last call is on `trnlab.torch.dynamo.last_compiled().report`.

Training: when grad is enabled and a graph input requires grad (a parameter), the graph goes through
AOTAutograd instead and its forward and backward graphs both run on the simulated chip (trnlab.torch.train);
`last_training()` returns the step's record: `.forward` / `.backward` Reports, `.latency_s`.
"""
from __future__ import annotations

import torch

_compiled: list = []


def last_compiled():
    """The CompiledModel of the most recent graph the backend ran (None before any call)."""
    return _compiled[-1] if _compiled else None


def last_training():
    """The trnlab.torch.train.Training record of the last training step (forward/backward Reports)."""
    from trnlab.torch.train import last_training as last
    return last()


def trnlab_backend(gm: torch.fx.GraphModule, example_inputs, options: dict | None = None, mode=None):
    from trnlab.torch.api import CompiledModel, check_options
    from trnlab.errors import OptionError
    from trnlab.torch import train
    opts = dict(options or {})
    if train.needs_training(example_inputs):
        return train.training_backend(gm, example_inputs, opts, mode)
    compiled: list = []

    def run(*args):
        # Compiled on the first real inputs (not dynamo's fake ones). The CompiledModel compiles one
        # variant per input signature (shapes, dtypes, values), so a dynamic-shape graph called with
        # new shapes never reuses a program specialised to other ones.
        if not compiled:
            if mode not in (None, "default"):
                raise OptionError(f"torch.compile mode={mode!r} is not supported by the trnlab backend; "
                                  "pass trnlab options with options={...}")
            check_options(opts)
            compiled.append(CompiledModel(
                gm, args, target=opts.get("target"), dtype=opts.get("dtype", torch.bfloat16),
                fallback=opts.get("fallback"), numerics=opts.get("numerics", True),
                check=opts.get("check", True), name=opts.get("name", "dynamo graph"), run_example=False))
            _compiled[:] = compiled          # only the last one: the backend keeps no model alive
        return _as_tuple(compiled[0](*args))

    return run


def _as_tuple(outputs):
    return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)


def register_backend() -> None:
    from torch._dynamo.backends.registry import _BACKENDS, register_backend as register
    if "trnlab" not in _BACKENDS:
        register(name="trnlab")(trnlab_backend)
