"""trnlab: an open lab for Trainium-class AI chips.

Top-level API (imported lazily):
  trnlab.get_chip(target)              chip presets (trn1, trn2, trn3)
  trnlab.run_kernel(fn, args, kwargs)  run a kernel on a simulated NeuronCore
  trnlab.benchmark(kernel, target=)    predicted latency, utilization, MFU (timing model)
"""
__version__ = "0.1.0"

_LAZY = {
    "get_chip": ("trnlab.hw", "get_chip"),
    "run_kernel": ("trnlab.runtime", "run_kernel"),
    "Machine": ("trnlab.core.machine", "Machine"),
    "benchmark": ("trnlab.bench", "benchmark"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'trnlab' has no attribute {name!r}")
